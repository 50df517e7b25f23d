package v1alpha1

// ProgressReport is what a running stage pod posts to the manager's progress endpoint
// (docs/design.md, "Live progress"); the manager sums the reports of a stage's pods into
// status.stageProgress. It is not a Kubernetes object.
// +kubebuilder:object:generate=false
type ProgressReport struct {
	// Stage, Phase and Index say which pod of which stage this is; the manager checks them
	// against the labels of the pod the token was bound to.
	Stage string `json:"stage"`
	Phase int32  `json:"phase"`
	Index int32  `json:"index"`
	// Done of Total units (rows, optimizer steps, prompts) of this pod's work.
	Done  int64 `json:"done"`
	Total int64 `json:"total"`
	// ElapsedSeconds is the time since the pod's stage work started: Done/ElapsedSeconds is
	// the pod's rate.
	ElapsedSeconds float64 `json:"elapsedSeconds"`
	// Metrics are the stage's live numbers (e.g. "loss"), at most MaxProgressMetrics.
	Metrics map[string]float64 `json:"metrics,omitempty"`
}

// MaxProgressMetrics bounds ProgressReport.Metrics and status.stageProgress.metrics.
const MaxProgressMetrics = 8
