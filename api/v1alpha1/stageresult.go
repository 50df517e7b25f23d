package v1alpha1

// StageResult is the small JSON document a stage pod writes to its termination
// message (and stdout) when it finishes. The controller folds these into
// status.phases. It is not a Kubernetes object. Keep it well under 4096 bytes:
// the kubelet truncates termination messages there.
// +kubebuilder:object:generate=false
type StageResult struct {
	// Stage is sample, label, train or eval.
	Stage string `json:"stage"`
	// Phase is the 1-based data-collection phase.
	Phase int32 `json:"phase"`
	// Index is the shard (sample, label) or ensemble member (train).
	Index int32 `json:"index"`

	// Counts (sample, label).
	Samples   int64 `json:"samples,omitempty"`
	Pairs     int64 `json:"pairs,omitempty"`
	Identical int64 `json:"identical,omitempty"`
	Ties      int64 `json:"ties,omitempty"`

	// Training diagnostics (train), means over the member's optimizer steps' last pass.
	Loss           *float64 `json:"loss,omitempty"`
	RewardAccuracy *float64 `json:"rewardAccuracy,omitempty"`
	RewardMargin   *float64 `json:"rewardMargin,omitempty"`
	KLToReference  *float64 `json:"klToReference,omitempty"`
	Steps          int64    `json:"steps,omitempty"`

	// Evaluation (eval); KLToInitial is also reported by train.
	WinRate     *float64 `json:"winRate,omitempty"`
	GoldReward  *float64 `json:"goldReward,omitempty"`
	KLToInitial *float64 `json:"klToInitial,omitempty"`
	MeanLength  *float64 `json:"meanLength,omitempty"`
	Distinct2   *float64 `json:"distinct2,omitempty"`

	// Checkpoint is the workspace-relative path the stage wrote (train, sample).
	Checkpoint string `json:"checkpoint,omitempty"`
	// DurationSeconds is the stage's own wall time.
	DurationSeconds float64 `json:"durationSeconds,omitempty"`
	// Message is a short human-readable note; on failure, the error.
	Message string `json:"message,omitempty"`
}

// MaxStageResultBytes is the kubelet's termination-message limit.
const MaxStageResultBytes = 4096

// EnvAnnotatorToken is the environment variable that carries spec.labeler.annotator.secretRef
// into the pods that score (label and eval); the stage passes it to an HTTP annotator as a
// bearer token.
const EnvAnnotatorToken = "BPO_ANNOTATOR_TOKEN"
