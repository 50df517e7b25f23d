package v1alpha1

// StageResult is the small JSON document a stage pod writes to its termination
// message (and stdout) when it finishes. The controller folds these into
// status.phases. It is not a Kubernetes object. Keep it well under 4096 bytes:
// the kubelet truncates termination messages there.
// +kubebuilder:object:generate=false
type StageResult struct {
	// Stage is sample, label, train, eval, report or export.
	Stage string `json:"stage"`
	// Phase is the 1-based data-collection phase (0: the baseline eval of the initial model).
	Phase int32 `json:"phase"`
	// Index is the shard (sample, label) or ensemble member (train).
	Index int32 `json:"index"`

	// Counts (sample, label).
	Samples   int64 `json:"samples,omitempty"`
	Pairs     int64 `json:"pairs,omitempty"`
	Identical int64 `json:"identical,omitempty"`
	Ties      int64 `json:"ties,omitempty"`
	// GuardDecided (label) is the number of kept pairs whose order the gold annotator's
	// degeneracy guard decided: a count, so that shards and pods add up like Pairs. Optional:
	// absent when the label stage does not measure it (an annotator without a guard).
	GuardDecided *int64 `json:"guardDecided,omitempty"`
	// Annotation (label) is what a remote annotator cost this shard; shards and pods add up.
	Annotation *AnnotationAccounting `json:"annotation,omitempty"`

	// Training diagnostics (train), means over the member's optimizer steps' last pass.
	Loss           *float64 `json:"loss,omitempty"`
	RewardAccuracy *float64 `json:"rewardAccuracy,omitempty"`
	RewardMargin   *float64 `json:"rewardMargin,omitempty"`
	KLToReference  *float64 `json:"klToReference,omitempty"`
	Steps          int64    `json:"steps,omitempty"`
	// FreshPairAccuracy (train, member 0, phase >= 2) is the implicit-reward accuracy of the
	// behavior policy (the merged ensemble after phase k-1) on phase k's pairs before any step:
	// the fraction of pairs with r(chosen) > r(rejected), ties 0.5, where
	// r(x,y) = log pi(y|x) - log pi_init(y|x).
	FreshPairAccuracy *float64 `json:"freshPairAccuracy,omitempty"`
	// FreshLengthBalanced (with FreshPairAccuracy) is the mean of that accuracy on the pairs whose
	// chosen response is the longer and on those whose chosen response is the shorter (absent when
	// either group is empty): a reward that ranks by length alone scores 0.5, as chance does.
	FreshLengthBalanced *float64 `json:"freshLengthBalanced,omitempty"`
	// PrevTrainPairAccuracy (train, member 0, phase >= 2) is the same accuracy of that policy on
	// phase k-1's pairs, the ones it was trained on: phase k-1's train-pair accuracy, measured
	// here because phase k-1 may have had no eval stage.
	PrevTrainPairAccuracy *float64 `json:"prevTrainPairAccuracy,omitempty"`

	// Evaluation (eval); KLToInitial is also reported by train.
	WinRate     *float64 `json:"winRate,omitempty"`
	GoldReward  *float64 `json:"goldReward,omitempty"`
	KLToInitial *float64 `json:"klToInitial,omitempty"`
	MeanLength  *float64 `json:"meanLength,omitempty"`
	Distinct2   *float64 `json:"distinct2,omitempty"`
	// TrainPairAccuracy (eval) is the implicit-reward accuracy of the evaluated policy on its
	// phase's own pairs, after training on them.
	TrainPairAccuracy *float64 `json:"trainPairAccuracy,omitempty"`
	// Fluency (eval) is the share of the greedy completions' words that are dictionary words
	// (a completion the token budget cut does not count its unfinished last word).
	Fluency *float64 `json:"fluency,omitempty"`
	// JudgeWinRate (eval) is spec.evaluator.judge's win rate of the greedy completions against
	// the human references.
	JudgeWinRate *float64 `json:"judgeWinRate,omitempty"`

	// Checkpoint is the workspace-relative path the stage wrote (train, sample).
	Checkpoint string `json:"checkpoint,omitempty"`
	// Report (report) is the workspace-relative path of report.md.
	Report string `json:"report,omitempty"`
	// Outputs (export) are the URIs the stage exported the policy and the adapter to.
	Outputs *RunOutputs `json:"outputs,omitempty"`
	// DurationSeconds is the stage's own wall time.
	DurationSeconds float64 `json:"durationSeconds,omitempty"`
	// Message is a short human-readable note; on failure, the error.
	Message string `json:"message,omitempty"`
}

// AnnotationAccounting counts what a remote annotator was asked and answered. Every field is a
// count, so shards, pods and phases add up.
type AnnotationAccounting struct {
	// pairs a judge decided (each asked in both orders).
	// +optional
	Pairs int64 `json:"pairs,omitempty"`
	// ties among them, whatever the cause (a tie verdict, a position flip, an invalid answer).
	// +optional
	Ties int64 `json:"ties,omitempty"`
	// invalid answers, unreadable after every retry (each makes its pair a tie).
	// +optional
	Invalid int64 `json:"invalid,omitempty"`
	// positionFlips is the number of pairs whose verdict changed with the order of the two
	// responses.
	// +optional
	PositionFlips int64 `json:"positionFlips,omitempty"`
	// requests sent, retries included.
	// +optional
	Requests int64 `json:"requests,omitempty"`
	// promptTokens and completionTokens the service reported.
	// +optional
	PromptTokens int64 `json:"promptTokens,omitempty"`
	// +optional
	CompletionTokens int64 `json:"completionTokens,omitempty"`
	// cacheHits is the number of verdicts read from the workspace's verdict cache (a retried
	// or resumed stage) instead of asked again.
	// +optional
	CacheHits int64 `json:"cacheHits,omitempty"`
	// texts a reward model scored.
	// +optional
	Texts int64 `json:"texts,omitempty"`
}

// Add adds b's counts to a.
func (a *AnnotationAccounting) Add(b AnnotationAccounting) {
	a.Pairs += b.Pairs
	a.Ties += b.Ties
	a.Invalid += b.Invalid
	a.PositionFlips += b.PositionFlips
	a.Requests += b.Requests
	a.PromptTokens += b.PromptTokens
	a.CompletionTokens += b.CompletionTokens
	a.CacheHits += b.CacheHits
	a.Texts += b.Texts
}

// MaxStageResultBytes is the kubelet's termination-message limit.
const MaxStageResultBytes = 4096

// EnvAnnotatorToken is the environment variable that carries spec.labeler.annotator.secretRef
// into the pods that score (label and eval); the stage passes it to an HTTP annotator as a
// bearer token.
const EnvAnnotatorToken = "BPO_ANNOTATOR_TOKEN"

// EnvEvaluatorToken carries spec.evaluator.judge.secretRef into eval pods.
const EnvEvaluatorToken = "BPO_EVALUATOR_TOKEN"

// EnvSamplerToken carries spec.sampler.engine.secretRef into sample pods.
const EnvSamplerToken = "BPO_SAMPLER_TOKEN"

// EnvOutputAccessKeyID and EnvOutputSecretAccessKey carry spec.output.secretRef's keys into
// export pods: names of their own, so that the output and the workspace may be stores with
// different credentials. The local runner reads them too (else the standard AWS_* chain).
const (
	EnvOutputAccessKeyID     = "BPO_OUTPUT_ACCESS_KEY_ID"
	EnvOutputSecretAccessKey = "BPO_OUTPUT_SECRET_ACCESS_KEY"
)
