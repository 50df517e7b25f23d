package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Decimal is a number written as a string, e.g. "0.1", "1", "5e-5". Floating-point fields are
// discouraged in Kubernetes APIs (they do not round-trip exactly through JSON and YAML), so every
// real-valued parameter of the recipe uses this type; the stage pods parse it with
// strconv.ParseFloat. Only non-negative numbers in plain or exponent notation are accepted.
// +kubebuilder:validation:Pattern=`^([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][-+]?[0-9]+)?$`
// +kubebuilder:validation:MaxLength=24
type Decimal string

// TokenizerType selects how text is turned into token ids.
// +kubebuilder:validation:Enum=byte;gpt2-bpe;auto
type TokenizerType string

const (
	// TokenizerByte maps bytes 0..255 to ids 0..255 and end-of-text to 256.
	TokenizerByte TokenizerType = "byte"
	// TokenizerGPT2BPE is the GPT-2 byte-level BPE tokenizer.
	TokenizerGPT2BPE TokenizerType = "gpt2-bpe"
	// TokenizerAuto uses the tokenizer recorded with the model (the default).
	TokenizerAuto TokenizerType = "auto"
)

// LossType names a direct-alignment-from-preferences (DAP) loss.
// +kubebuilder:validation:Enum=DPO;IPO;SLiC
type LossType string

const (
	// LossDPO is -log sigmoid(beta * h).
	LossDPO LossType = "DPO"
	// LossIPO is (h - 1/(2 beta))^2.
	LossIPO LossType = "IPO"
	// LossSLiC is max(0, 1 - beta * h).
	LossSLiC LossType = "SLiC"
)

// ReferenceType is the trust-region schedule: which model anchors the KL term of the loss.
// +kubebuilder:validation:Enum=Behavior;Initial;EMA;Fixed
type ReferenceType string

const (
	// ReferenceBehavior is BPO: the reference is the behavior model that sampled the phase's data.
	ReferenceBehavior ReferenceType = "Behavior"
	// ReferenceInitial keeps the initial model as the reference (online DPO; offline DPO when phases = 1).
	ReferenceInitial ReferenceType = "Initial"
	// ReferenceEMA moves the reference towards the learner at each phase boundary.
	ReferenceEMA ReferenceType = "EMA"
	// ReferenceFixed uses a given checkpoint as the reference for the whole run.
	ReferenceFixed ReferenceType = "Fixed"
)

// AnnotatorKind selects where preference labels come from.
// +kubebuilder:validation:Enum=Builtin;HTTP;OpenAIJudge;RewardModel
type AnnotatorKind string

const (
	// AnnotatorBuiltin is an annotator compiled into the stage image (e.g. "sentiment").
	AnnotatorBuiltin AnnotatorKind = "Builtin"
	// AnnotatorHTTP calls an external scoring service speaking our own JSON protocol.
	AnnotatorHTTP AnnotatorKind = "HTTP"
	// AnnotatorOpenAIJudge asks an LLM behind an OpenAI-compatible chat-completions API which
	// of two responses is better, in both orders.
	AnnotatorOpenAIJudge AnnotatorKind = "OpenAIJudge"
	// AnnotatorRewardModel scores each response with a served reward model.
	AnnotatorRewardModel AnnotatorKind = "RewardModel"
)

// IsRemote reports whether the annotator is a service reached over HTTP (it may take a
// secretRef and limits).
func (k AnnotatorKind) IsRemote() bool {
	return k == AnnotatorHTTP || k == AnnotatorOpenAIJudge || k == AnnotatorRewardModel
}

// RewardProtocol is the request/response shape of a served reward model.
// +kubebuilder:validation:Enum=OpenRLHF;VLLMPooling
type RewardProtocol string

const (
	// RewardOpenRLHF is OpenRLHF's remote reward model: POST {"query": [text, ...]} ->
	// {"rewards": [...]}.
	RewardOpenRLHF RewardProtocol = "OpenRLHF"
	// RewardVLLMPooling is vLLM's pooling endpoint for reward models: POST {"model", "input":
	// [text, ...]} -> {"data": [{"data": ...}, ...]}.
	RewardVLLMPooling RewardProtocol = "VLLMPooling"
)

// JudgeOutput is how a judge is asked to format its verdict.
// +kubebuilder:validation:Enum=Auto;JSON;Text
type JudgeOutput string

const (
	// JudgeOutputAuto asks for structured output (a JSON schema) and falls back to plain text
	// when the server rejects it.
	JudgeOutputAuto JudgeOutput = "Auto"
	// JudgeOutputJSON always asks for structured output.
	JudgeOutputJSON JudgeOutput = "JSON"
	// JudgeOutputText never asks for structured output; the answer is read as text.
	JudgeOutputText JudgeOutput = "Text"
)

// Stage names, in the order they run within a phase.
const (
	StageSample = "sample"
	StageLabel  = "label"
	StageTrain  = "train"
	StageEval   = "eval"
	// StageReport runs once, after the last phase's eval: report.md, plots and sample
	// completions in the workspace (spec.evaluator.report).
	StageReport = "report"
	// StageExport runs with spec.output: after the last phase (after the report) it exports
	// the final policy and the ensemble's adapter to spec.output.uri; with
	// spec.output.everyPhase also at the end of every earlier phase.
	StageExport = "export"
)

// Labels the controller puts on every child object (Jobs, their pods, the spec ConfigMap).
const (
	LabelRun     = "alignment.bpo.dev/run"
	LabelPhase   = "alignment.bpo.dev/phase"
	LabelStage   = "alignment.bpo.dev/stage"
	LabelAttempt = "alignment.bpo.dev/attempt"
)

// Kueue labels. Set on an AlignmentRun, they are copied to each stage Job, which the
// controller then creates suspended: Kueue's batch/Job integration admits every stage against
// the LocalQueue's quota and unsuspends it.
const (
	LabelKueueQueueName     = "kueue.x-k8s.io/queue-name"
	LabelKueuePriorityClass = "kueue.x-k8s.io/priority-class"
)

// Limits that keep child object names valid (see AlignmentRun's name rule).
const (
	// MaxRunNameLength keeps `<run>-p<k>-<stage>-a<n>-<index>` (the Indexed Job's pod hostname)
	// within the 63-character DNS label limit: 40 + len("-p1000-sample-a20-63") = 60.
	MaxRunNameLength = 40
	// MaxPhases is the upper bound of spec.trustRegion.phases.
	MaxPhases = 1000
	// MaxBackoffLimit is the upper bound of spec.backoffLimit.
	MaxBackoffLimit = 20
	// MaxParallelism is the upper bound of the sampler's and labeler's parallelism.
	MaxParallelism = 64
	// MaxMembers is the upper bound of spec.ensemble.members.
	MaxMembers = 16
)

// AlignmentRun is one preference-alignment run with the BPO method (or one of its baselines):
// F data-collection phases, each sampling preference pairs from the current behavior model,
// labelling them with an annotator, training an ensemble of LoRA adapters on them with a DAP
// loss (DPO, IPO or SLiC) against a reference model chosen by spec.trustRegion, and
// evaluating. The controller runs every stage of every phase as a Kubernetes Job.
//
// The recipe (model, loss, trustRegion, budget, ensemble, data, workspace and the stage
// parameters) is immutable once created; create a new AlignmentRun to change it. Lifecycle
// fields (suspend, activeDeadlineSeconds, backoffLimit, ttlSecondsAfterFinished) and stage
// scheduling fields (image, imagePullPolicy, command, args, resources, nodeSelector,
// tolerations, env, parallelism) may change at any time; changes apply to Jobs created after
// the change (running Jobs are not modified).
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=ar,categories=bpo
// +kubebuilder:printcolumn:name="State",type=string,JSONPath=`.status.state`,description="Pending, Running, Suspended, Succeeded or Failed (derived from the conditions)"
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.progress`,description="Current phase k of F"
// +kubebuilder:printcolumn:name="Stage",type=string,JSONPath=`.status.stage`,description="Current stage (sample, label, train, eval)"
// +kubebuilder:printcolumn:name="Progress",type=integer,JSONPath=`.status.stageProgress.percent`,description="Percent of the current stage done (live, as its pods report it)"
// +kubebuilder:printcolumn:name="Baseline",type=string,JSONPath=`.status.baselineWinRate`,description="Win rate of the initial model (phase 0)"
// +kubebuilder:printcolumn:name="WinRate",type=string,JSONPath=`.status.latestWinRate`,description="Win rate of the latest evaluation"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="ETA",type=string,JSONPath=`.status.stageProgress.eta`,priority=1,description="Estimated time left in the current stage"
// +kubebuilder:printcolumn:name="Retries",type=integer,JSONPath=`.status.retries`,priority=1,description="Failed attempts of the current stage"
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.status=="True")].reason`,priority=1,description="Reason of the condition that is True"
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 40",message="metadata.name must be at most 40 characters so that child Job names (<run>-p<k>-<stage>-a<n>) stay within 63: use a shorter name"
// +kubebuilder:validation:XValidation:rule="self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="metadata.name must be an RFC 1123 label (lower-case letters, digits and '-', starting and ending with a letter or digit) because it prefixes child Job names and label values: rename the run"
type AlignmentRun struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the run's recipe and lifecycle settings.
	// +required
	Spec AlignmentRunSpec `json:"spec"`

	// status is written by the controller.
	// +optional
	Status AlignmentRunStatus `json:"status,omitempty"`
}

// AlignmentRunSpec is the desired state of an AlignmentRun.
//
// Recipe fields (model, loss, trustRegion, budget, ensemble, data, workspace, and the stage
// parameters under sampler, labeler, trainer and evaluator) are immutable. Lifecycle and
// scheduling fields are mutable.
//
// +kubebuilder:validation:XValidation:rule="self.trustRegion.phases < 1 || self.budget.pairs % self.trustRegion.phases == 0",message="spec.budget.pairs must be divisible by spec.trustRegion.phases (every phase collects pairs/phases pairs): change spec.budget.pairs or spec.trustRegion.phases"
// +kubebuilder:validation:XValidation:rule="!has(self.workspace.objectStore) || !((has(self.sampler) && has(self.sampler.command)) || (has(self.labeler) && has(self.labeler.command)) || (has(self.trainer) && has(self.trainer.command)) || (has(self.evaluator) && has(self.evaluator.command)))",message="spec.workspace.objectStore works with the bpo stage commands only (they stage the workspace in and out of the bucket): remove spec.<stage>.command or use a persistentVolumeClaim"
// +kubebuilder:validation:XValidation:rule="self.trustRegion.phases < 1 || self.budget.pairs / self.trustRegion.phases >= self.budget.pairsPerStep",message="spec.budget.pairs / spec.trustRegion.phases must be at least spec.budget.pairsPerStep (every phase needs one full optimizer step): raise spec.budget.pairs, or lower spec.trustRegion.phases or spec.budget.pairsPerStep"
type AlignmentRunSpec struct {
	// model is the base (SFT) model the run starts from, and its tokenizer. Immutable.
	// +required
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.model is immutable: create a new AlignmentRun to change the recipe"
	Model ModelSpec `json:"model"`

	// loss is the direct-alignment loss and its beta. Immutable.
	// +optional
	// +kubebuilder:default={}
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.loss is immutable: create a new AlignmentRun to change the recipe"
	Loss LossSpec `json:"loss,omitempty"`

	// trustRegion is the reference-model schedule ("trust region": the model the KL anchor of
	// the loss is built around) and F, the number of data-collection phases. With T optimizer
	// steps in total, every T/F steps (at each phase boundary) the behavior model that samples
	// new pairs is replaced by a frozen snapshot of the current learner, for every reference
	// type; the types differ only in the reference pi_ref used by the loss during phase k:
	//   Behavior (default, BPO): the behavior model of phase k, the same snapshot as the sampler;
	//   Initial: the initial model throughout, i.e. online DPO (offline DPO when phases = 1);
	//   EMA: ref <- (1 - emaAlpha) * ref + emaAlpha * learner at each phase boundary (emaAlpha required);
	//   Fixed: the checkpoint at fixedCheckpoint throughout (fixedCheckpoint required).
	// Immutable.
	// +optional
	// +kubebuilder:default={}
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.trustRegion is immutable: create a new AlignmentRun to change the recipe"
	TrustRegion TrustRegionSpec `json:"trustRegion,omitempty"`

	// budget is the annotation budget and how it is consumed. Immutable.
	// +required
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.budget is immutable: create a new AlignmentRun to change the recipe"
	Budget BudgetSpec `json:"budget"`

	// ensemble is the learner: N LoRA adapters trained on the same pairs; the behavior model is
	// the base plus the exact mean of their deltas. Immutable.
	// +optional
	// +kubebuilder:default={}
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.ensemble is immutable: create a new AlignmentRun to change the recipe"
	Ensemble EnsembleSpec `json:"ensemble,omitempty"`

	// data is where prompts (and held-out evaluation prompts with reference texts) come from. Immutable.
	// +required
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.data is immutable: create a new AlignmentRun to change the recipe"
	Data DataSpec `json:"data"`

	// sampler runs the sample stage: draws samplesPerPrompt responses per prompt from the behavior model.
	// +optional
	// +kubebuilder:default={}
	Sampler SamplerSpec `json:"sampler,omitempty"`

	// labeler runs the label stage: the annotator scores the samples and picks chosen/rejected.
	// +optional
	// +kubebuilder:default={}
	Labeler LabelerSpec `json:"labeler,omitempty"`

	// trainer runs the train stage: one Job completion per ensemble member.
	// +optional
	// +kubebuilder:default={}
	Trainer TrainerSpec `json:"trainer,omitempty"`

	// evaluator runs the eval stage: win rate of the merged policy's outputs against the
	// reference texts of the held-out prompts.
	// +optional
	// +kubebuilder:default={}
	Evaluator EvaluatorSpec `json:"evaluator,omitempty"`

	// seed fixes every random choice of the run (prompt order, sampling, batch order), so a
	// run is reproducible and the arms of a comparison can share or vary their seeds. 0 is a
	// seed like any other. Default 1. Immutable.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.seed is immutable: create a new AlignmentRun to change the recipe"
	Seed *int64 `json:"seed,omitempty"`

	// workspace is the shared volume every stage pod mounts at /workspace. Immutable.
	// +required
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.workspace is immutable: create a new AlignmentRun to change the recipe"
	Workspace WorkspaceSpec `json:"workspace"`

	// output exports the final policy (a dense Hugging Face folder: config.json,
	// model.safetensors, the base model's tokenizer files) and the ensemble as one PEFT LoRA
	// adapter to a bucket, in an export stage after the last phase (status.outputs names them).
	// Mutable: a run exports what spec.output says when it reaches an export stage.
	// +optional
	Output *OutputSpec `json:"output,omitempty"`

	// suspend stops the run: running stage Jobs are deleted and no new ones are created until
	// it is set back to false. The run then resumes at the same phase and stage; completed
	// stages are not redone. Mutable.
	// +optional
	// +kubebuilder:default=false
	Suspend *bool `json:"suspend,omitempty"`

	// activeDeadlineSeconds limits the run's wall time, counted from status.startTime or from
	// the last resume. When exceeded, running Jobs are deleted and the run fails with reason
	// DeadlineExceeded. Mutable.
	// +optional
	// +kubebuilder:validation:Minimum=1
	ActiveDeadlineSeconds *int64 `json:"activeDeadlineSeconds,omitempty"`

	// backoffLimit is the number of retries per stage: a failed stage Job is replaced by a new
	// attempt Job (<run>-p<k>-<stage>-a<n>) up to this many times before the run fails with
	// reason StageFailed. Mutable.
	// +optional
	// +kubebuilder:default=2
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=20
	BackoffLimit *int32 `json:"backoffLimit,omitempty"`

	// ttlSecondsAfterFinished deletes the run's child Jobs (and their pods) and its spec
	// ConfigMap this many seconds after the run succeeded or failed. The AlignmentRun itself
	// and its status are kept (so GitOps tools do not recreate and rerun it). Mutable.
	// +optional
	// +kubebuilder:validation:Minimum=0
	TTLSecondsAfterFinished *int32 `json:"ttlSecondsAfterFinished,omitempty"`
}

// ModelSpec is the base model: exactly one of builtin, path or uri.
// +kubebuilder:validation:XValidation:rule="[has(self.builtin), has(self.path), has(self.uri)].filter(x, x).size() == 1",message="spec.model: set exactly one of spec.model.builtin (e.g. tiny-reviews), spec.model.path (a checkpoint directory in the workspace) or spec.model.uri (s3://bucket/models/sft, gs://...)"
type ModelSpec struct {
	// builtin is the name of a model shipped in the stage image, e.g. "tiny-reviews".
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	Builtin string `json:"builtin,omitempty"`

	// path is a checkpoint directory (config.json, model.safetensors) relative to the workspace
	// volume's root (spec.workspace), e.g. "models/sft". No leading '/' and no '..'.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="!self.startsWith('/') && !self.split('/').exists(s, s == '..')",message="spec.model.path must be relative to the workspace root, without '..': e.g. models/sft"
	Path string `json:"path,omitempty"`

	// uri is a checkpoint folder in a bucket: s3://bucket/models/sft or gs://bucket/models/sft
	// (a Hugging Face GPT-2 folder: config.json, model.safetensors, the tokenizer). Every stage
	// copies it into the run's folder (<run>/base-in/) before loading it. It is read with
	// spec.workspace.objectStore's endpoint and credentials, or, without an object-store
	// workspace, with the pod's own identity (the local runner: AWS_* variables, ADC).
	// Or an OCI image whose root holds that folder, oci://registry/repo:tag (or @sha256:...):
	// every stage pod mounts it read-only as a Kubernetes image volume (needs the ImageVolume
	// feature: on by default since Kubernetes 1.35, and a runtime that supports it, e.g.
	// containerd 2.1 or CRI-O 1.31); the local runner cannot read it.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="self.matches('^(s3|gs)://[a-z0-9][-a-z0-9._]*[a-z0-9]/[^?#@]+$') || self.matches('^oci://[a-z0-9][-a-z0-9.]*(:[0-9]+)?(/[a-z0-9][-a-z0-9._]*)+(:[A-Za-z0-9_][-A-Za-z0-9_.]{0,127})?(@sha256:[a-f0-9]{64})?$')",message="spec.model.uri must be s3://bucket/path or gs://bucket/path to a checkpoint folder, without credentials, or oci://registry/repository:tag of an image holding one"
	URI string `json:"uri,omitempty"`

	// tokenizer is byte (ids 0..255 are bytes, 256 is end-of-text), gpt2-bpe, or auto (use the
	// tokenizer recorded with the model; the default).
	// +optional
	// +kubebuilder:default=auto
	Tokenizer TokenizerType `json:"tokenizer,omitempty"`
}

// LossSpec is the DAP loss. With h the difference of the chosen and rejected policy/reference
// log-ratios: DPO = -log sigmoid(beta*h), IPO = (h - 1/(2*beta))^2, SLiC = max(0, 1 - beta*h).
// +kubebuilder:validation:XValidation:rule="!has(self.lengthAlpha) || self.type != 'IPO' || !has(self.ipoLengthNormalize) || !self.ipoLengthNormalize || !self.lengthAlpha.matches('^([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][-+]?[0-9]+)?$') || double(self.lengthAlpha) == 0.0",message="spec.loss.lengthAlpha needs summed log-probs: with IPO set spec.loss.ipoLengthNormalize to false, or lengthAlpha to \"0\""
type LossSpec struct {
	// type is DPO (default), IPO or SLiC.
	// +optional
	// +kubebuilder:default=DPO
	Type LossType `json:"type,omitempty"`

	// beta is the strength of the KL anchor to the reference model, a decimal string > 0
	// (default "0.1", as in the paper's code). Strings avoid floating-point drift in YAML.
	// +optional
	// +kubebuilder:default="0.1"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][-+]?[0-9]+)?$') || double(self) > 0.0",message="spec.loss.beta must be a decimal greater than 0, e.g. \"0.1\""
	Beta Decimal `json:"beta,omitempty"`

	// ipoLengthNormalize averages IPO's sequence log-probs over response tokens instead of
	// summing them (TRL's convention; default true). Ignored by DPO and SLiC.
	// +optional
	// +kubebuilder:default=true
	IPOLengthNormalize *bool `json:"ipoLengthNormalize,omitempty"`

	// lengthAlpha is R-DPO's length regularisation (Park et al. 2024): alpha*(|y_w| - |y_l|), the
	// response lengths in tokens, is added to beta*h inside the loss, so that a preference the
	// length difference already explains does not teach the policy "longer is better". A
	// decimal string >= 0; empty or "0" (the default) is the plain loss. It needs summed
	// log-probs, so IPO takes it only with ipoLengthNormalize false.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][-+]?[0-9]+)?$')",message="spec.loss.lengthAlpha must be a decimal greater than or equal to 0, e.g. \"0.1\""
	LengthAlpha Decimal `json:"lengthAlpha,omitempty"`
}

// TrustRegionSpec is the reference-model schedule and the number of phases (see
// AlignmentRunSpec.trustRegion for the table of schedules, from the BPO paper).
// +kubebuilder:validation:XValidation:rule="(has(self.reference) && self.reference == 'EMA') ? has(self.emaAlpha) : !has(self.emaAlpha)",message="spec.trustRegion.emaAlpha is required when spec.trustRegion.reference is EMA and must be unset otherwise"
// +kubebuilder:validation:XValidation:rule="(has(self.reference) && self.reference == 'Fixed') ? has(self.fixedCheckpoint) : !has(self.fixedCheckpoint)",message="spec.trustRegion.fixedCheckpoint is required when spec.trustRegion.reference is Fixed and must be unset otherwise"
type TrustRegionSpec struct {
	// reference chooses the model the DAP loss is anchored to (its KL trust region):
	// Behavior (default): BPO, the reference is the behavior model that sampled the current
	// phase's pairs, so the trust region moves with the data;
	// Initial: the initial (base/SFT) model for the whole run, i.e. online DPO (offline DPO when
	// phases = 1);
	// EMA: an exponential moving average, ref <- (1 - emaAlpha) * ref + emaAlpha * learner,
	// applied at every phase boundary (requires emaAlpha);
	// Fixed: the checkpoint at fixedCheckpoint for the whole run (requires fixedCheckpoint).
	// +optional
	// +kubebuilder:default=Behavior
	Reference ReferenceType `json:"reference,omitempty"`

	// emaAlpha is the EMA step size, a decimal string with 0 < emaAlpha <= 1 (the paper's range
	// is 0.005-0.01). Required when reference is EMA, forbidden otherwise.
	// +optional
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][-+]?[0-9]+)?$') || (double(self) > 0.0 && double(self) <= 1.0)",message="spec.trustRegion.emaAlpha must be a decimal with 0 < emaAlpha <= 1, e.g. \"0.01\""
	EMAAlpha *Decimal `json:"emaAlpha,omitempty"`

	// fixedCheckpoint is the reference checkpoint directory, relative to the workspace root (no
	// leading '/', no '..'), or a folder in a bucket (s3://bucket/path, gs://bucket/path), read
	// like spec.model.uri. Required when reference is Fixed, forbidden otherwise.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="!self.startsWith('/') && !self.split('/').exists(s, s == '..')",message="spec.trustRegion.fixedCheckpoint must be relative to the workspace root, without '..': e.g. models/golden"
	FixedCheckpoint *string `json:"fixedCheckpoint,omitempty"`

	// phases is F, the number of data-collection phases (behavior-model snapshots), 1..1000.
	// The annotation budget is the same for every F: each phase collects budget.pairs / F pairs.
	// F = 1 is offline DPO (all pairs from the initial model); the paper's headline is F = 2;
	// F = budget.pairs / budget.pairsPerStep is on-policy. Default 2.
	// +optional
	// +kubebuilder:default=2
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	Phases int32 `json:"phases,omitempty"`
}

// BudgetSpec is the annotation budget and how it is spent.
type BudgetSpec struct {
	// pairs is the total number of labelled preference pairs (the annotation budget), split
	// evenly over the phases: must be divisible by spec.trustRegion.phases.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000000
	Pairs int32 `json:"pairs"`

	// pairsPerStep is the batch of pairs per optimizer step (16 in the paper). Default 16.
	// +optional
	// +kubebuilder:default=16
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65536
	PairsPerStep int32 `json:"pairsPerStep,omitempty"`

	// evalPrompts is the number of held-out prompts scored by the eval stage. Default 64.
	// +optional
	// +kubebuilder:default=64
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	EvalPrompts int32 `json:"evalPrompts,omitempty"`

	// epochsPerPhase is the number of passes over each phase's pairs. Default 1.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	EpochsPerPhase int32 `json:"epochsPerPhase,omitempty"`

	// samplesPerPrompt is the number of responses sampled per prompt, >= 2 (default 2). With more
	// than 2 the annotator's best and worst form the pair.
	// +optional
	// +kubebuilder:default=2
	// +kubebuilder:validation:Minimum=2
	// +kubebuilder:validation:Maximum=16
	SamplesPerPrompt int32 `json:"samplesPerPrompt,omitempty"`
}

// EnsembleSpec is the ensemble of LoRA adapters that forms the learner.
type EnsembleSpec struct {
	// members is N, the number of LoRA adapters (1..16, default 5 as in the paper). The train
	// stage runs one Job completion per member.
	// +optional
	// +kubebuilder:default=5
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=16
	Members int32 `json:"members,omitempty"`

	// rank is the LoRA rank r (default 8).
	// +optional
	// +kubebuilder:default=8
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1024
	Rank int32 `json:"rank,omitempty"`

	// alpha is the LoRA scale numerator: W_eff = W + (alpha/rank) * A·B (default 16).
	// +optional
	// +kubebuilder:default=16
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4096
	Alpha int32 `json:"alpha,omitempty"`
}

// DataSpec is the prompt source: exactly one of builtin, configMap or path.
// +kubebuilder:validation:XValidation:rule="[has(self.builtin), has(self.configMap), has(self.path)].filter(x, x).size() == 1",message="spec.data: set exactly one of spec.data.builtin (e.g. reviews), spec.data.configMap or spec.data.path"
type DataSpec struct {
	// builtin is a task shipped in the stage image, e.g. "reviews".
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	Builtin string `json:"builtin,omitempty"`

	// configMap holds the prompts in the run's namespace. It is mounted read-only into every
	// stage pod at /etc/bpo/data/<key>.
	// +optional
	ConfigMap *ConfigMapDataSource `json:"configMap,omitempty"`

	// path is a directory relative to the workspace root holding prompts.jsonl and eval.jsonl.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="!self.startsWith('/') && !self.split('/').exists(s, s == '..')",message="spec.data.path must be relative to the workspace root, without '..': e.g. data/reviews"
	Path string `json:"path,omitempty"`
}

// ConfigMapDataSource names a ConfigMap and the keys that hold the prompts (JSON lines).
type ConfigMapDataSource struct {
	// name of the ConfigMap, in the run's namespace.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// promptsKey is the key holding the training prompts, one JSON object per line with a
	// "prompt" field. Default "prompts.jsonl".
	// +optional
	// +kubebuilder:default="prompts.jsonl"
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	PromptsKey string `json:"promptsKey,omitempty"`

	// evalKey is the key holding the held-out prompts with their reference texts ("prompt",
	// "reference" fields). Default "eval.jsonl".
	// +optional
	// +kubebuilder:default="eval.jsonl"
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	EvalKey string `json:"evalKey,omitempty"`
}

// StageTemplate is how a stage's pods are scheduled and started. All of its fields are mutable:
// they apply to the stage Jobs created after the change.
type StageTemplate struct {
	// image of the stage container; default: the controller's --stage-image flag.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	Image string `json:"image,omitempty"`

	// imagePullPolicy of the stage container; default: the controller's --stage-image-pull-policy flag.
	// +optional
	// +kubebuilder:validation:Enum=Always;IfNotPresent;Never
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`

	// command replaces the whole stage command line: the container runs command + args and the
	// controller adds no arguments (env and mounts stay; the process must still honour the stage
	// contract: write a StageResult to /dev/termination-log). When unset,
	// the container runs `bpo <stage> --config /etc/bpo/run.yaml --workspace /workspace
	// --phase <k> [--shards <n>] --termination-log /dev/termination-log` followed by args.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	Command []string `json:"command,omitempty"`

	// args are extra arguments: appended to the default `bpo <stage> ...` command line, or
	// passed to command when command is set.
	// +optional
	// +kubebuilder:validation:MaxItems=256
	Args []string `json:"args,omitempty"`

	// resources of the stage container (per pod). A resource the stage leaves unset gets the
	// operator's default (manager flags --stage-cpu-request, --stage-memory-request,
	// --stage-memory-limit; docs/deploy.md): set a request or limit here to replace it.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`

	// activeDeadlineSeconds bounds the wall time of each attempt of this stage (the Job's
	// activeDeadlineSeconds, counted from the Job's start; a suspended Job's timer restarts).
	// When exceeded the Job's pods are stopped and the attempt fails with a message naming this
	// field; the next attempt follows spec.backoffLimit. Unset: no per-stage deadline
	// (spec.activeDeadlineSeconds still bounds the whole run). Mutable: applies to Jobs created
	// after the change.
	// +optional
	// +kubebuilder:validation:Minimum=1
	ActiveDeadlineSeconds *int64 `json:"activeDeadlineSeconds,omitempty"`

	// nodeSelector for the stage pods.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// tolerations for the stage pods.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`

	// env is added to the stage container after BPO_RUN_NAME and BPO_RUN_UID.
	// +optional
	// +kubebuilder:validation:MaxItems=128
	Env []corev1.EnvVar `json:"env,omitempty"`
}

// SamplerSpec is the sample stage. Its sampling parameters (temperature, topK, topP,
// maxNewTokens) are part of the recipe and immutable; the rest is mutable.
// +kubebuilder:validation:XValidation:rule="has(self.topK) == has(oldSelf.topK) && has(self.topP) == has(oldSelf.topP)",message="spec.sampler.topK and spec.sampler.topP cannot be added or removed after creation: create a new AlignmentRun to change the recipe"
// +kubebuilder:validation:XValidation:rule="has(self.engine) == has(oldSelf.engine)",message="spec.sampler.engine cannot be added or removed after creation: create a new AlignmentRun to change the recipe"
type SamplerSpec struct {
	StageTemplate `json:",inline"`

	// parallelism is the number of shards (Job completions, all run in parallel) of each sample
	// Job, 1..64 (default 1). Mutable: applies to phases not yet sampled.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=64
	Parallelism *int32 `json:"parallelism,omitempty"`

	// temperature of ancestral sampling, a decimal string > 0 (default "1.0").
	// +optional
	// +kubebuilder:default="1.0"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][-+]?[0-9]+)?$') || double(self) > 0.0",message="spec.sampler.temperature must be a decimal greater than 0, e.g. \"1.0\""
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.sampler.temperature is immutable: create a new AlignmentRun to change the recipe"
	Temperature Decimal `json:"temperature,omitempty"`

	// topK keeps only the k most likely tokens at each step (unset: no top-k filtering).
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.sampler.topK is immutable: create a new AlignmentRun to change the recipe"
	TopK *int32 `json:"topK,omitempty"`

	// topP keeps the smallest set of tokens whose probability reaches p (nucleus sampling),
	// a decimal string with 0 < topP <= 1 (unset: no nucleus filtering).
	// +optional
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][-+]?[0-9]+)?$') || (double(self) > 0.0 && double(self) <= 1.0)",message="spec.sampler.topP must be a decimal with 0 < topP <= 1, e.g. \"0.9\""
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.sampler.topP is immutable: create a new AlignmentRun to change the recipe"
	TopP *Decimal `json:"topP,omitempty"`

	// maxNewTokens is the maximum response length in tokens (default 32).
	// +optional
	// +kubebuilder:default=32
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=8192
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.sampler.maxNewTokens is immutable: create a new AlignmentRun to change the recipe"
	MaxNewTokens int32 `json:"maxNewTokens,omitempty"`

	// engine draws the samples: Builtin (the stage's own Go sampler, the default) or OpenAI (a
	// server with an OpenAI-compatible completions API and vLLM's runtime LoRA endpoints, such
	// as vLLM or bpo serve). Either way the behavior and reference log-probs are the stage's
	// own scoring. Immutable.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.sampler.engine is immutable: create a new AlignmentRun to change the recipe"
	Engine *SamplerEngine `json:"engine,omitempty"`
}

// SamplerEngineKind selects what draws the samples.
// +kubebuilder:validation:Enum=Builtin;OpenAI
type SamplerEngineKind string

const (
	// SamplerEngineBuiltin is the stage's own sampler (trainer/sample).
	SamplerEngineBuiltin SamplerEngineKind = "Builtin"
	// SamplerEngineOpenAI is a server with an OpenAI-compatible /completions API that loads
	// LoRA adapters at run time (vLLM's /load_lora_adapter): vLLM, bpo serve.
	SamplerEngineOpenAI SamplerEngineKind = "OpenAI"
)

// DefaultSamplerMaxConcurrency is spec.sampler.engine.maxConcurrency's default.
const DefaultSamplerMaxConcurrency int32 = 4

// SamplerEngine is spec.sampler.engine. With kind OpenAI the sample stage loads phase k's
// behavior adapter (phase-<k>/behavior-adapter, the ensemble as one LoRA adapter) into the
// server, asks it for the samples, and scores them itself (docs/serve.md, "Sampling a run
// through a server").
// +kubebuilder:validation:XValidation:rule="(!has(self.kind) || self.kind == 'Builtin') ? !(has(self.url) || has(self.model) || has(self.secretRef) || has(self.maxConcurrency) || has(self.allowInsecureHTTP) || has(self.workspacePath)) : true",message="sampler engine kind Builtin takes no url, model, secretRef, maxConcurrency, allowInsecureHTTP or workspacePath: remove them or set kind OpenAI"
// +kubebuilder:validation:XValidation:rule="(has(self.kind) && self.kind == 'OpenAI') ? (has(self.url) && has(self.model)) : true",message="sampler engine kind OpenAI needs url (the API base, e.g. http://vllm:8000/v1) and model (the name the server serves the base model under)"
// +kubebuilder:validation:XValidation:rule="!has(self.secretRef) || !has(self.url) || self.url.startsWith('https://') || (has(self.allowInsecureHTTP) && self.allowInsecureHTTP)",message="sampler engine: a secretRef's token is only sent to an https:// url; set allowInsecureHTTP: true to send it over http:// (an in-cluster service without TLS)"
type SamplerEngine struct {
	// kind is Builtin (default) or OpenAI.
	// +optional
	// +kubebuilder:default=Builtin
	Kind SamplerEngineKind `json:"kind,omitempty"`

	// url is the server's API base, e.g. http://vllm:8000/v1: the stage POSTs to
	// <url>/completions, <url>/load_lora_adapter and <url>/unload_lora_adapter and GETs
	// <url>/models. Kind OpenAI only.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="self.startsWith('https://') || self.startsWith('http://')",message="sampler engine url must start with http:// or https://"
	URL string `json:"url,omitempty"`

	// model is the name the server serves spec.model under (vLLM's --served-model-name); the
	// stage checks that the server lists it. Kind OpenAI only.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	Model string `json:"model,omitempty"`

	// secretRef selects a key of a Secret in the run's namespace holding the server's API key
	// (sent as a bearer token); it reaches the sample pods only as an environment variable.
	// +optional
	SecretRef *corev1.SecretKeySelector `json:"secretRef,omitempty"`

	// allowInsecureHTTP lets the secretRef's token travel to a plain http:// url (an in-cluster
	// server without TLS). By default a token is only sent over https://.
	// +optional
	AllowInsecureHTTP bool `json:"allowInsecureHTTP,omitempty"`

	// maxConcurrency is the number of completion requests in flight per sample pod, 1..256
	// (default 4).
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=256
	MaxConcurrency int32 `json:"maxConcurrency,omitempty"`

	// workspacePath is where the server sees the workspace volume (the folder the sample pods
	// mount at /workspace): the adapter's lora_path is
	// <workspacePath>/<run>/phase-<k>/behavior-adapter. Default: the sample pod's own path,
	// i.e. the server mounts the run's workspace claim at /workspace with the same subPath.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:Pattern=`^/`
	WorkspacePath string `json:"workspacePath,omitempty"`
}

// LabelerSpec is the label stage. Its annotator is part of the recipe and immutable.
type LabelerSpec struct {
	StageTemplate `json:",inline"`

	// parallelism is the number of shards of each label Job, 1..64 (default 1). Mutable.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=64
	Parallelism *int32 `json:"parallelism,omitempty"`

	// annotator scores samples; the higher score is the chosen response. Default: the
	// built-in "sentiment" annotator. Immutable.
	// +optional
	// +kubebuilder:default={kind: "Builtin", name: "sentiment"}
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.labeler.annotator is immutable: create a new AlignmentRun to change the recipe"
	Annotator *AnnotatorSpec `json:"annotator,omitempty"`
}

// AnnotatorSpec selects the annotator: kind Builtin with a name; HTTP with a url; OpenAIJudge with
// a url and a model; RewardModel with a url and a protocol.
// +kubebuilder:validation:XValidation:rule="(!has(self.kind) || self.kind == 'Builtin') ? (has(self.name) && !has(self.url) && !has(self.secretRef) && !has(self.limits)) : true",message="annotator kind Builtin needs name (e.g. sentiment) and no url, secretRef or limits"
// +kubebuilder:validation:XValidation:rule="(has(self.kind) && self.kind != 'Builtin') ? (has(self.url) && !has(self.name)) : true",message="annotator kinds HTTP, OpenAIJudge and RewardModel need url (http:// or https://) and no name"
// +kubebuilder:validation:XValidation:rule="(has(self.kind) && self.kind == 'OpenAIJudge') ? has(self.model) : true",message="annotator kind OpenAIJudge needs model (the name the server serves)"
// +kubebuilder:validation:XValidation:rule="!has(self.model) || (has(self.kind) && (self.kind == 'OpenAIJudge' || (self.kind == 'RewardModel' && has(self.protocol) && self.protocol == 'VLLMPooling')))",message="annotator model is only for kind OpenAIJudge, or kind RewardModel with protocol VLLMPooling (OpenRLHF's server serves one model)"
// +kubebuilder:validation:XValidation:rule="(has(self.kind) && self.kind == 'RewardModel') ? has(self.protocol) : !has(self.protocol)",message="annotator protocol (OpenRLHF or VLLMPooling) is required with kind RewardModel and only allowed there"
// +kubebuilder:validation:XValidation:rule="(has(self.promptTemplate) || has(self.output)) ? (has(self.kind) && self.kind == 'OpenAIJudge') : true",message="annotator promptTemplate and output are only for kind OpenAIJudge"
// +kubebuilder:validation:XValidation:rule="!has(self.secretRef) || !has(self.url) || self.url.startsWith('https://') || (has(self.allowInsecureHTTP) && self.allowInsecureHTTP)",message="annotator: a secretRef's token is only sent to an https:// url; set allowInsecureHTTP: true to send it over http:// (an in-cluster service without TLS)"
type AnnotatorSpec struct {
	// kind is Builtin (an annotator in the stage image), HTTP (an external scoring service with
	// our JSON protocol), OpenAIJudge (a pairwise LLM judge over an OpenAI-compatible API) or
	// RewardModel (a served reward model, see protocol).
	// +optional
	// +kubebuilder:default=Builtin
	Kind AnnotatorKind `json:"kind,omitempty"`

	// name of the built-in annotator, e.g. "sentiment" (guarded VADER). Only with kind Builtin.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	Name string `json:"name,omitempty"`

	// url of the service. kind HTTP: the endpoint, to which the label and eval stages POST
	// {"items": [{"prompt", "responses": [...]}]} and expect {"scores": [[...]]}, one number
	// per response (higher is better). kind OpenAIJudge: the API base, e.g.
	// http://vllm:8000/v1 (requests go to <url>/chat/completions). kind RewardModel: the
	// endpoint, e.g. http://rm:5000/get_reward (OpenRLHF) or http://vllm:8000/pooling. See
	// docs/design.md.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="self.startsWith('https://') || self.startsWith('http://')",message="annotator url must start with http:// or https://"
	URL string `json:"url,omitempty"`

	// secretRef selects a key of a Secret in the run's namespace holding the service's
	// credentials (sent as a bearer token); it reaches the label and eval pods only as an
	// environment variable (never in the spec ConfigMap). Not with kind Builtin.
	// +optional
	SecretRef *corev1.SecretKeySelector `json:"secretRef,omitempty"`

	// allowInsecureHTTP lets the secretRef's token travel to a plain http:// url, for an
	// in-cluster service without TLS (traffic inside the cluster network, e.g. behind a service
	// mesh). By default a token is only sent over https://.
	// +optional
	AllowInsecureHTTP bool `json:"allowInsecureHTTP,omitempty"`

	// model is the served model's name: required with kind OpenAIJudge, and sent in vLLM
	// pooling requests with kind RewardModel.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	Model string `json:"model,omitempty"`

	// protocol of a reward model (kind RewardModel only): OpenRLHF or VLLMPooling.
	// +optional
	Protocol RewardProtocol `json:"protocol,omitempty"`

	// promptTemplate is the judge's prompt (kind OpenAIJudge only), a Go text/template over
	// .Prompt, .A and .B that asks which continuation is better, answered "A", "B" or "tie".
	// Default: a prompt for the built-in reviews task (docs/design.md shows it).
	// +optional
	// +kubebuilder:validation:MaxLength=16384
	PromptTemplate string `json:"promptTemplate,omitempty"`

	// output is how the judge is asked to answer (kind OpenAIJudge only): Auto (the default:
	// a JSON schema, plain text if the server refuses it), JSON or Text.
	// +optional
	Output JudgeOutput `json:"output,omitempty"`

	// limits bound what the run spends on the service: concurrency, rates and a budget for the
	// whole run. Not with kind Builtin.
	// +optional
	Limits *AnnotatorLimits `json:"limits,omitempty"`
}

// AnnotatorLimits bound the requests a run sends to a remote annotator. Rates and concurrency
// apply per pod; the budget applies to the whole run (every phase, shard and retry), which
// stops with a clear error instead of spending more.
type AnnotatorLimits struct {
	// maxConcurrency is the number of requests in flight per pod (default 4).
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=256
	MaxConcurrency int32 `json:"maxConcurrency,omitempty"`

	// requestsPerMinute caps the request rate per pod (0: no cap).
	// +optional
	// +kubebuilder:validation:Minimum=0
	RequestsPerMinute int32 `json:"requestsPerMinute,omitempty"`

	// tokensPerMinute caps the tokens per minute per pod, as the service reports them in its
	// answers' usage (0: no cap; only for services that report usage: kind OpenAIJudge, or
	// RewardModel with protocol VLLMPooling).
	// +optional
	// +kubebuilder:validation:Minimum=0
	TokensPerMinute int64 `json:"tokensPerMinute,omitempty"`

	// maxRequests is the run's budget of requests, retries included (0: unlimited).
	// +optional
	// +kubebuilder:validation:Minimum=0
	MaxRequests int64 `json:"maxRequests,omitempty"`

	// maxTokens is the run's budget of tokens, as the service reports them (0: unlimited).
	// +optional
	// +kubebuilder:validation:Minimum=0
	MaxTokens int64 `json:"maxTokens,omitempty"`
}

// TrainerSpec is the train stage: one Indexed Job completion per ensemble member. Its
// optimisation parameters are part of the recipe and immutable.
type TrainerSpec struct {
	StageTemplate `json:",inline"`

	// learningRate is AdamW's peak learning rate (linear decay, no warmup), a decimal string > 0
	// such as "5e-5" (the default, as in the paper).
	// +optional
	// +kubebuilder:default="5e-5"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][-+]?[0-9]+)?$') || double(self) > 0.0",message="spec.trainer.learningRate must be a decimal greater than 0, e.g. \"5e-5\""
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.trainer.learningRate is immutable: create a new AlignmentRun to change the recipe"
	LearningRate Decimal `json:"learningRate,omitempty"`

	// maxGradNorm clips the global gradient norm, a decimal string > 0 (default "1.0").
	// +optional
	// +kubebuilder:default="1.0"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][-+]?[0-9]+)?$') || double(self) > 0.0",message="spec.trainer.maxGradNorm must be a decimal greater than 0, e.g. \"1.0\""
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.trainer.maxGradNorm is immutable: create a new AlignmentRun to change the recipe"
	MaxGradNorm Decimal `json:"maxGradNorm,omitempty"`
}

// EvaluatorSpec is the eval stage. everyPhase and samplesPerPrompt are immutable.
type EvaluatorSpec struct {
	StageTemplate `json:",inline"`

	// everyPhase evaluates after every phase; when false (the default) only after the last.
	// The last phase is always evaluated.
	// +optional
	// +kubebuilder:default=false
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.evaluator.everyPhase is immutable: create a new AlignmentRun to change the recipe"
	EveryPhase bool `json:"everyPhase,omitempty"`

	// samplesPerPrompt is the number of policy outputs scored per held-out prompt; 1 (the
	// default) is the greedy output.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=16
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.evaluator.samplesPerPrompt is immutable: create a new AlignmentRun to change the recipe"
	SamplesPerPrompt int32 `json:"samplesPerPrompt,omitempty"`

	// judge is a further evaluator next to the gold annotator and the held-out classifier,
	// typically an OpenAIJudge: the eval stage reports its win rate of the policy's greedy
	// completions against the human references, so a run can be judged by something other than
	// what labelled its pairs. Its secretRef reaches eval pods as BPO_EVALUATOR_TOKEN.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.evaluator.judge is immutable: create a new AlignmentRun to change the recipe"
	Judge *AnnotatorSpec `json:"judge,omitempty"`

	// baseline evaluates the initial model before phase 1, as phase 0 (status.phaseResults
	// entry 0 and status.baselineWinRate): the point every later evaluation and the report are
	// compared with. Default true; false saves one eval stage (and a remote judge's spend).
	// +optional
	// +kubebuilder:default=true
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.evaluator.baseline is immutable: create a new AlignmentRun to change the recipe"
	Baseline *bool `json:"baseline,omitempty"`

	// report adds a report stage after the last phase: report.md, plots and the initial model's
	// and the final policy's completions side by side, written into the run's workspace folder
	// (status.report names it). Default true. The report compares the final policy with the
	// baseline, so there is no report stage when baseline is false.
	// +optional
	// +kubebuilder:default=true
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.evaluator.report is immutable: create a new AlignmentRun to change the recipe"
	Report *bool `json:"report,omitempty"`
}

// BaselineEnabled reports spec.evaluator.baseline (default true).
func (e *EvaluatorSpec) BaselineEnabled() bool { return e.Baseline == nil || *e.Baseline }

// ReportEnabled reports spec.evaluator.report (default true).
func (e *EvaluatorSpec) ReportEnabled() bool { return e.Report == nil || *e.Report }

// WorkspaceSpec is where the run's files live, shared by all stages: a volume
// (persistentVolumeClaim, ReadWriteMany when stages may run on different nodes) or a bucket
// (objectStore); in a cluster exactly one of the two. path is only for the local runner (`bpo
// run -f`). docs/deploy.md says when to choose which.
// +kubebuilder:validation:XValidation:rule="has(self.persistentVolumeClaim) != has(self.objectStore)",message="spec.workspace: set exactly one of spec.workspace.persistentVolumeClaim (a volume) or spec.workspace.objectStore (a bucket) in a cluster (spec.workspace.path is only read by the local runner `bpo run`)"
// +kubebuilder:validation:XValidation:rule="!has(self.objectStore) || !has(self.subPath) || self.subPath.size() == 0",message="spec.workspace.subPath is for a volume: with spec.workspace.objectStore put the prefix in the uri (s3://bucket/prefix)"
type WorkspaceSpec struct {
	// persistentVolumeClaim is mounted at /workspace in every stage pod.
	// +optional
	PersistentVolumeClaim *WorkspacePVC `json:"persistentVolumeClaim,omitempty"`

	// subPath within the volume to mount at /workspace (no leading '/', no '..'). The run keeps
	// its files under <subPath>/<run-name>/.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="!self.startsWith('/') && !self.split('/').exists(s, s == '..')",message="spec.workspace.subPath must be relative, without '..': e.g. runs"
	SubPath string `json:"subPath,omitempty"`

	// path is a local directory used by the local runner `bpo run` only; the controller
	// ignores it.
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	Path string `json:"path,omitempty"`

	// objectStore keeps the workspace in a bucket instead of a volume: every stage pod stages
	// the files its stage reads into an emptyDir at /workspace, runs there, and publishes what
	// it wrote (data first, done markers last). The layout under the uri is the volume's.
	// +optional
	ObjectStore *WorkspaceObjectStore `json:"objectStore,omitempty"`
}

// WorkspaceObjectStore is a bucket and key prefix that holds the workspace (docs/storage.md).
// +kubebuilder:validation:XValidation:rule="!has(self.secretRef) || self.uri.startsWith('s3://')",message="spec.workspace.objectStore.secretRef is for s3:// buckets: gs:// uses the pod's workload identity (Application Default Credentials)"
type WorkspaceObjectStore struct {
	// uri is s3://bucket[/prefix] (AWS S3 or an S3-compatible server at endpoint) or
	// gs://bucket[/prefix]. The run keeps its files under <uri>/<run-name>/. Never put
	// credentials in it: use secretRef. (The local runner also takes file:///abs/path.)
	// +required
	// +kubebuilder:validation:MinLength=6
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="self.matches('^(s3|gs)://[a-z0-9][-a-z0-9._]*[a-z0-9](/[^?#@]*)?$')",message="spec.workspace.objectStore.uri must be s3://bucket[/prefix] or gs://bucket[/prefix], without credentials, query or fragment"
	URI string `json:"uri"`

	// endpoint is the URL of an S3-compatible server (MinIO, Ceph RGW, versitygw, R2), e.g.
	// http://minio.storage:9000; buckets are then addressed path-style. Empty: AWS.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="self.startsWith('https://') || self.startsWith('http://')",message="spec.workspace.objectStore.endpoint must start with http:// or https://"
	Endpoint string `json:"endpoint,omitempty"`

	// region of the bucket, e.g. eu-west-1. Empty: us-east-1 with an endpoint, else the pod's
	// AWS_REGION.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[a-z0-9-]+$`
	Region string `json:"region,omitempty"`

	// secretRef names a Secret in the run's namespace with the s3:// credentials, passed to
	// the stage pods as AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY environment variables only.
	// Unset: the pod's own identity (IRSA, instance profile).
	// +optional
	SecretRef *ObjectStoreSecretRef `json:"secretRef,omitempty"`
}

// OutputSpec is where a run exports its models (docs/storage.md, "Models out"): under
// <uri>/<run-name>/, policy/ (the merged final policy, dense) and adapter/ (the ensemble as one
// PEFT LoRA adapter over the base model), each completed by a .complete object written last.
// +kubebuilder:validation:XValidation:rule="!has(self.secretRef) || self.uri.startsWith('s3://')",message="spec.output.secretRef is for s3:// buckets: gs:// uses the pod's workload identity (Application Default Credentials)"
type OutputSpec struct {
	// uri is s3://bucket[/prefix] (AWS S3 or an S3-compatible server at endpoint) or
	// gs://bucket[/prefix]. Never put credentials in it: use secretRef. (The local runner also
	// takes file:///abs/path.)
	// +required
	// +kubebuilder:validation:MinLength=6
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="self.matches('^(s3|gs)://[a-z0-9][-a-z0-9._]*[a-z0-9](/[^?#@]*)?$')",message="spec.output.uri must be s3://bucket[/prefix] or gs://bucket[/prefix], without credentials, query or fragment"
	URI string `json:"uri"`

	// endpoint is the URL of an S3-compatible server, e.g. http://minio.storage:9000; buckets
	// are then addressed path-style. Empty: AWS.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="self.startsWith('https://') || self.startsWith('http://')",message="spec.output.endpoint must start with http:// or https://"
	Endpoint string `json:"endpoint,omitempty"`

	// region of the bucket, e.g. eu-west-1. Empty: us-east-1 with an endpoint, else the pod's
	// AWS_REGION.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[a-z0-9-]+$`
	Region string `json:"region,omitempty"`

	// secretRef names a Secret in the run's namespace with the s3:// credentials, passed to the
	// export pod as BPO_OUTPUT_ACCESS_KEY_ID and BPO_OUTPUT_SECRET_ACCESS_KEY environment
	// variables only. Unset: the pod's own identity (IRSA, or the AWS_* variables of
	// spec.workspace.objectStore's secretRef).
	// +optional
	SecretRef *ObjectStoreSecretRef `json:"secretRef,omitempty"`

	// everyPhase also exports each earlier phase's policy and adapter, to
	// <uri>/<run-name>/phase-<k>/, at the end of phase k.
	// +optional
	EveryPhase bool `json:"everyPhase,omitempty"`
}

// RunOutputs are the URIs a run exported its final models to (spec.output); never credentials.
type RunOutputs struct {
	// policy is the folder of the final policy (config.json, model.safetensors, tokenizer).
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	Policy string `json:"policy,omitempty"`
	// adapter is the folder of the ensemble as a PEFT LoRA adapter (adapter_config.json,
	// adapter_model.safetensors) over the base model.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	Adapter string `json:"adapter,omitempty"`
}

// ObjectStoreSecretRef selects the keys of a Secret that hold an access key pair.
type ObjectStoreSecretRef struct {
	// name of the Secret in the run's namespace.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// accessKeyIDKey is the Secret's key holding the access key id. Default AWS_ACCESS_KEY_ID.
	// +optional
	// +kubebuilder:default=AWS_ACCESS_KEY_ID
	// +kubebuilder:validation:MaxLength=253
	AccessKeyIDKey string `json:"accessKeyIDKey,omitempty"`

	// secretAccessKeyKey is the Secret's key holding the secret access key. Default
	// AWS_SECRET_ACCESS_KEY.
	// +optional
	// +kubebuilder:default=AWS_SECRET_ACCESS_KEY
	// +kubebuilder:validation:MaxLength=253
	SecretAccessKeyKey string `json:"secretAccessKeyKey,omitempty"`
}

// WorkspacePVC names a PersistentVolumeClaim in the run's namespace.
type WorkspacePVC struct {
	// claimName of the PersistentVolumeClaim.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	ClaimName string `json:"claimName"`
}

// Condition types of an AlignmentRun. At most one of them is True at a time.
const (
	// ConditionRunning is True while stage Jobs are being run.
	ConditionRunning = "Running"
	// ConditionSuspended is True while spec.suspend is true (and no stage Job runs).
	ConditionSuspended = "Suspended"
	// ConditionSucceeded is True once every stage of every phase completed.
	ConditionSucceeded = "Succeeded"
	// ConditionFailed is True once the run failed; this is terminal.
	ConditionFailed = "Failed"
)

// Condition reasons.
const (
	// ReasonStageRunning (Running=True): a stage Job is running; the message names phase, stage and attempt.
	ReasonStageRunning = "StageRunning"
	// ReasonStageQueued (Running=True): the stage Job is suspended, waiting for admission (by
	// Kueue, when the run has a kueue.x-k8s.io/queue-name label); the message names the queue.
	ReasonStageQueued = "StageQueued"
	// ReasonStagePodsPending (Running=True): a stage pod cannot start: unschedulable, an image
	// that cannot be pulled, or a container that cannot be created; the message quotes the
	// scheduler or kubelet. The stage is not failed for it (activeDeadlineSeconds bounds it).
	ReasonStagePodsPending = "StagePodsPending"
	// ReasonSuspended (Suspended=True, Running=False): spec.suspend is true.
	ReasonSuspended = "Suspended"
	// ReasonResumed (Suspended=False): spec.suspend went back to false.
	ReasonResumed = "Resumed"
	// ReasonNotSuspended (Suspended=False): the run was never suspended.
	ReasonNotSuspended = "NotSuspended"
	// ReasonPending (Running=False): no stage Job has been created yet (transient, before the first Job).
	ReasonPending = "Pending"
	// ReasonSucceeded (Succeeded=True; also Running=False and Failed=False): all phases completed.
	ReasonSucceeded = "Succeeded"
	// ReasonInProgress (Succeeded=False, Failed=False): the run has not finished.
	ReasonInProgress = "InProgress"
	// ReasonFailed (Succeeded=False, Running=False): the run failed; see the Failed condition.
	ReasonFailed = "Failed"
	// ReasonInvalidSpec (Failed=True): the spec violates a rule the API server should have
	// enforced (e.g. on a cluster without CEL validation); the message lists the fields.
	ReasonInvalidSpec = "InvalidSpec"
	// ReasonStageFailed (Failed=True): a stage failed backoffLimit+1 times; the message is the
	// stage's own error.
	ReasonStageFailed = "StageFailed"
	// ReasonDeadlineExceeded (Failed=True): spec.activeDeadlineSeconds passed.
	ReasonDeadlineExceeded = "DeadlineExceeded"
	// ReasonJobCreationFailed (Failed=True): the API server rejected a stage Job as invalid
	// (e.g. malformed resources or tolerations).
	ReasonJobCreationFailed = "JobCreationFailed"
	// ReasonNameConflict (Failed=True): a Job or ConfigMap with a name the run needs exists and is
	// not controlled by the run; the operator neither adopts nor waits for it. Delete it or
	// rename the run.
	ReasonNameConflict = "NameConflict"
	// ReasonPolicyViolation (Failed=True): a stage's image, command or Secret env is not allowed
	// by the operator's stage policy (docs/security.md); the message names the field and the flag.
	ReasonPolicyViolation = "PolicyViolation"
)

// AlignmentRunStatus is the observed state of an AlignmentRun. Real-valued metrics are strings
// formatted with %.4g (e.g. "0.734"), read as they are by kubectl and jsonpath.
type AlignmentRunStatus struct {
	// observedGeneration is the metadata.generation this status was computed from.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Running, Suspended, Succeeded, Failed (at most one True).
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// state summarises the conditions in one word: Pending (none True yet), Running,
	// Suspended, Succeeded or Failed. It is derived from the conditions, which are the source
	// of truth, and written with them in the same status update; for scripts and tools that
	// read one field (e.g. an Argo Workflows successCondition "status.state == Succeeded").
	// +optional
	State RunState `json:"state,omitempty"`

	// phase is the current (or, once finished, last) phase k, 1-based.
	// +optional
	Phase int32 `json:"phase,omitempty"`

	// phases is F, the total number of phases.
	// +optional
	Phases int32 `json:"phases,omitempty"`

	// progress is "k/F", for kubectl get.
	// +optional
	// +kubebuilder:validation:MaxLength=16
	Progress string `json:"progress,omitempty"`

	// stage is the current (or, once finished, last) stage: sample, label, train, eval, report
	// or export.
	// +optional
	// +kubebuilder:validation:MaxLength=16
	Stage string `json:"stage,omitempty"`

	// retries is the number of failed attempts of the current stage so far.
	// +optional
	Retries int32 `json:"retries,omitempty"`

	// phaseResults holds one entry per started phase.
	// +optional
	// +listType=map
	// +listMapKey=phase
	// +kubebuilder:validation:MaxItems=1000
	PhaseResults []PhaseResult `json:"phaseResults,omitempty"`

	// latestCheckpoint is the workspace-relative directory of the newest trained checkpoint
	// (ensemble member 0 of the last trained phase).
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	LatestCheckpoint string `json:"latestCheckpoint,omitempty"`

	// latestWinRate is the win rate of the newest evaluation.
	// +optional
	// +kubebuilder:validation:MaxLength=32
	LatestWinRate string `json:"latestWinRate,omitempty"`

	// baselineWinRate is the initial model's win rate (the phase-0 evaluation,
	// spec.evaluator.baseline), for kubectl get next to latestWinRate.
	// +optional
	// +kubebuilder:validation:MaxLength=32
	BaselineWinRate string `json:"baselineWinRate,omitempty"`

	// report is the workspace-relative path of report.md, once the report stage wrote it
	// (`bpo report --workspace` renders the same report from the workspace again).
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Report string `json:"report,omitempty"`

	// outputs are the URIs of the final policy and adapter, once the export stage wrote them
	// (spec.output).
	// +optional
	Outputs *RunOutputs `json:"outputs,omitempty"`

	// stageProgress is the running stage's live progress, as its pods report it to the
	// manager (docs/design.md, "Live progress"); absent between stages and once finished.
	// +optional
	StageProgress *StageProgress `json:"stageProgress,omitempty"`

	// startTime is when the run first started (was first reconciled while not suspended).
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`

	// completionTime is when the run succeeded or failed.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`

	// stageContract is the version of the stage contract (docs/stage-contract.md: the stage
	// pods' invocation, workspace files and termination message) the controller ran this run's
	// stages with, recorded when the run starts (e.g. "v1"). Empty for a run started by an
	// operator from before the field.
	// +optional
	// +kubebuilder:validation:MaxLength=16
	StageContract string `json:"stageContract,omitempty"`
}

// StageProgress is a running stage's progress, summed over the pods that reported it.
type StageProgress struct {
	// phase and stage are the stage this progress is of.
	// +required
	Phase int32 `json:"phase"`
	// +required
	// +kubebuilder:validation:MaxLength=16
	Stage string `json:"stage"`
	// done and total count the stage's units (rows sampled or labelled, optimizer steps,
	// evaluated prompts), summed over the reporting pods.
	// +optional
	Done int64 `json:"done,omitempty"`
	// +optional
	Total int64 `json:"total,omitempty"`
	// percent is 100*done/total, rounded down.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	Percent int32 `json:"percent,omitempty"`
	// rate is units per second (%.4g), summed over the reporting pods.
	// +optional
	// +kubebuilder:validation:MaxLength=32
	Rate string `json:"rate,omitempty"`
	// eta is the estimated time left at the current rate (a Go duration, e.g. "2m10s").
	// +optional
	// +kubebuilder:validation:MaxLength=32
	ETA string `json:"eta,omitempty"`
	// metrics are the stage's live numbers (e.g. the running loss of a train stage), means over
	// the reporting pods, %.4g; at most 8.
	// +optional
	// +kubebuilder:validation:MaxProperties=8
	Metrics map[string]string `json:"metrics,omitempty"`
	// pods is how many of the stage's pods have reported.
	// +optional
	Pods int32 `json:"pods,omitempty"`
	// updateTime is when the manager last folded a report in.
	// +optional
	UpdateTime *metav1.Time `json:"updateTime,omitempty"`
}

// PhaseResult summarises one phase, folded from the stages' StageResults.
type PhaseResult struct {
	// phase is k, 1-based; 0 is the initial model's evaluation (spec.evaluator.baseline).
	// +required
	Phase int32 `json:"phase"`

	// completedStages lists the stages of this phase that have completed.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=6
	CompletedStages []string `json:"completedStages,omitempty"`

	// samples is the number of responses sampled (sum over sample shards).
	// +optional
	Samples int64 `json:"samples,omitempty"`
	// pairsSampled is the number of prompts whose samples differ (candidate pairs).
	// +optional
	PairsSampled int64 `json:"pairsSampled,omitempty"`
	// identical is the number of prompts dropped because their samples were identical.
	// +optional
	Identical int64 `json:"identical,omitempty"`
	// pairsKept is the number of labelled pairs kept for training (sum over label shards).
	// +optional
	PairsKept int64 `json:"pairsKept,omitempty"`
	// ties is the number of pairs dropped because the annotator scored them equal.
	// +optional
	Ties int64 `json:"ties,omitempty"`

	// loss is the mean DAP loss over ensemble members (last pass of the phase).
	// +optional
	Loss string `json:"loss,omitempty"`
	// rewardAccuracy is the mean fraction of pairs whose chosen implicit reward is higher.
	// +optional
	RewardAccuracy string `json:"rewardAccuracy,omitempty"`
	// rewardMargin is the mean implicit reward margin (chosen - rejected).
	// +optional
	RewardMargin string `json:"rewardMargin,omitempty"`
	// klToReference is the mean KL estimate of the learner to the phase's reference model.
	// +optional
	KLToReference string `json:"klToReference,omitempty"`
	// klToInitial is the KL estimate to the initial model: from the eval stage when the phase
	// was evaluated, otherwise the mean over the train members.
	// +optional
	KLToInitial string `json:"klToInitial,omitempty"`

	// winRate is the fraction of held-out prompts where the policy beat the reference text.
	// +optional
	WinRate string `json:"winRate,omitempty"`
	// goldReward is the mean gold-annotator score of the policy's outputs.
	// +optional
	GoldReward string `json:"goldReward,omitempty"`
	// meanLength is the mean output length in tokens at evaluation.
	// +optional
	MeanLength string `json:"meanLength,omitempty"`
	// distinct2 is the fraction of distinct bigrams in the evaluated outputs.
	// +optional
	Distinct2 string `json:"distinct2,omitempty"`
	// fluency is the share of the greedy evaluation outputs' words that are dictionary words
	// (an output the token budget cut does not count its unfinished last word).
	// +optional
	Fluency string `json:"fluency,omitempty"`

	// freshPairAccuracy (phases >= 2) is the implicit-reward accuracy of the policy after phase
	// k-1 on this phase's pairs, before training on them: the fraction of pairs (ties count 1/2)
	// whose chosen response has the higher log pi(y|x) - log pi_init(y|x).
	// +optional
	FreshPairAccuracy string `json:"freshPairAccuracy,omitempty"`
	// freshLengthBalanced is freshPairAccuracy averaged over two groups, the pairs whose chosen
	// response is the longer and those whose chosen response is the shorter: ranking by length
	// alone scores 0.5 on it, as chance does, so it is what the reward learnt beyond length.
	// +optional
	FreshLengthBalanced string `json:"freshLengthBalanced,omitempty"`
	// trainPairAccuracy is the same accuracy of the policy after this phase on this phase's
	// pairs, after training on them.
	// +optional
	TrainPairAccuracy string `json:"trainPairAccuracy,omitempty"`
	// guardDecided is the fraction of the kept pairs whose order the gold annotator's
	// degeneracy guard decided (when the label stage reports it).
	// +optional
	GuardDecided string `json:"guardDecided,omitempty"`
	// annotation is what the phase's label stage spent on a remote annotator (judge or reward
	// model): judged pairs, ties, invalid answers, position flips, requests and tokens.
	// +optional
	Annotation *AnnotationAccounting `json:"annotation,omitempty"`
	// judgeWinRate is the evaluator judge's win rate of the greedy completions against the
	// human references (spec.evaluator.judge).
	// +optional
	JudgeWinRate string `json:"judgeWinRate,omitempty"`

	// checkpoint is the workspace-relative checkpoint written by this phase's train stage.
	// +optional
	Checkpoint string `json:"checkpoint,omitempty"`

	// startTime is when the phase's first Job was created.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`
	// completionTime is when the phase's last stage completed.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`
	// durationSeconds is completionTime - startTime.
	// +optional
	DurationSeconds int64 `json:"durationSeconds,omitempty"`
}

// +kubebuilder:object:root=true

// AlignmentRunList is a list of AlignmentRuns.
type AlignmentRunList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AlignmentRun `json:"items"`
}
