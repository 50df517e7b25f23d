package testutil

import (
	"strings"

	corev1 "k8s.io/api/core/v1"

	"k8s.io/utils/ptr"

	alignv1 "github.com/bpo-dev/bpo/api/v1alpha1"
)

// InvalidCase is a spec the API server must reject at admission and Validate must reject too.
type InvalidCase struct {
	Name   string
	Mutate func(*alignv1.AlignmentRun)
	// APIMessage is a substring of the API server's error: it names the field (and the fix).
	APIMessage string
	// GoField is a substring of Validate's aggregated error (the field path).
	GoField string
}

func dec(s string) *alignv1.Decimal { return ptr.To(alignv1.Decimal(s)) }

// InvalidCases applies to MakeRun(ns, name).
var InvalidCases = []InvalidCase{
	{"beta zero", func(r *alignv1.AlignmentRun) { r.Spec.Loss.Beta = "0" },
		"spec.loss.beta must be a decimal greater than 0", "spec.loss.beta"},
	{"beta negative", func(r *alignv1.AlignmentRun) { r.Spec.Loss.Beta = "-0.1" },
		"spec.loss.beta", "spec.loss.beta"},
	{"beta not a number", func(r *alignv1.AlignmentRun) { r.Spec.Loss.Beta = "abc" },
		"spec.loss.beta", "spec.loss.beta"},
	{"lengthAlpha negative", func(r *alignv1.AlignmentRun) { r.Spec.Loss.LengthAlpha = "-0.1" },
		"spec.loss.lengthAlpha must be a decimal greater than or equal to 0", "spec.loss.lengthAlpha"},
	{"lengthAlpha with length-normalised IPO", func(r *alignv1.AlignmentRun) {
		r.Spec.Loss.Type, r.Spec.Loss.LengthAlpha = alignv1.LossIPO, "0.1"
	}, "spec.loss.lengthAlpha needs summed log-probs", "spec.loss.lengthAlpha"},
	{"phases below 1", func(r *alignv1.AlignmentRun) { r.Spec.TrustRegion.Phases = -1 },
		"spec.trustRegion.phases", "spec.trustRegion.phases"},
	{"phases above 1000", func(r *alignv1.AlignmentRun) { r.Spec.TrustRegion.Phases = 1001 },
		"spec.trustRegion.phases", "spec.trustRegion.phases"},
	{"pairs not divisible by phases", func(r *alignv1.AlignmentRun) { r.Spec.TrustRegion.Phases = 3 },
		"spec.budget.pairs must be divisible by spec.trustRegion.phases", "spec.budget.pairs"},
	{"pairs per phase below pairsPerStep", func(r *alignv1.AlignmentRun) { r.Spec.TrustRegion.Phases = 8 },
		"must be at least spec.budget.pairsPerStep", "spec.budget.pairs"},
	{"samplesPerPrompt below 2", func(r *alignv1.AlignmentRun) { r.Spec.Budget.SamplesPerPrompt = 1 },
		"spec.budget.samplesPerPrompt", "spec.budget.samplesPerPrompt"},
	{"model builtin and path", func(r *alignv1.AlignmentRun) { r.Spec.Model.Path = "models/sft" },
		"spec.model: set exactly one of spec.model.builtin", "spec.model"},
	{"model neither builtin nor path", func(r *alignv1.AlignmentRun) { r.Spec.Model.Builtin = "" },
		"spec.model: set exactly one of spec.model.builtin", "spec.model"},
	{"model path escapes the workspace", func(r *alignv1.AlignmentRun) {
		r.Spec.Model = alignv1.ModelSpec{Path: "../etc/sft"}
	}, "spec.model.path must be relative to the workspace root", "spec.model.path"},
	{"data with two sources", func(r *alignv1.AlignmentRun) { r.Spec.Data.Path = "data/reviews" },
		"spec.data: set exactly one of", "spec.data"},
	{"data with no source", func(r *alignv1.AlignmentRun) { r.Spec.Data = alignv1.DataSpec{} },
		"spec.data: set exactly one of", "spec.data"},
	{"EMA without emaAlpha", func(r *alignv1.AlignmentRun) { r.Spec.TrustRegion.Reference = alignv1.ReferenceEMA },
		"spec.trustRegion.emaAlpha is required when spec.trustRegion.reference is EMA", "spec.trustRegion.emaAlpha"},
	{"emaAlpha without EMA", func(r *alignv1.AlignmentRun) { r.Spec.TrustRegion.EMAAlpha = dec("0.01") },
		"spec.trustRegion.emaAlpha is required when spec.trustRegion.reference is EMA and must be unset otherwise", "spec.trustRegion.emaAlpha"},
	{"emaAlpha above 1", func(r *alignv1.AlignmentRun) {
		r.Spec.TrustRegion.Reference, r.Spec.TrustRegion.EMAAlpha = alignv1.ReferenceEMA, dec("1.5")
	}, "spec.trustRegion.emaAlpha must be a decimal with 0 < emaAlpha <= 1", "spec.trustRegion.emaAlpha"},
	{"Fixed without fixedCheckpoint", func(r *alignv1.AlignmentRun) { r.Spec.TrustRegion.Reference = alignv1.ReferenceFixed },
		"spec.trustRegion.fixedCheckpoint is required when spec.trustRegion.reference is Fixed", "spec.trustRegion.fixedCheckpoint"},
	{"seed negative", func(r *alignv1.AlignmentRun) { r.Spec.Seed = ptr.To(int64(-1)) },
		"spec.seed", "spec.seed"},
	{"too many ensemble members", func(r *alignv1.AlignmentRun) { r.Spec.Ensemble.Members = 17 },
		"spec.ensemble.members", "spec.ensemble.members"},
	{"temperature zero", func(r *alignv1.AlignmentRun) { r.Spec.Sampler.Temperature = "0" },
		"spec.sampler.temperature must be a decimal greater than 0", "spec.sampler.temperature"},
	{"topP above 1", func(r *alignv1.AlignmentRun) { r.Spec.Sampler.TopP = dec("1.5") },
		"spec.sampler.topP must be a decimal with 0 < topP <= 1", "spec.sampler.topP"},
	{"sampler parallelism zero", func(r *alignv1.AlignmentRun) { r.Spec.Sampler.Parallelism = ptr.To(int32(0)) },
		"spec.sampler.parallelism", "spec.sampler.parallelism"},
	{"learningRate not a number", func(r *alignv1.AlignmentRun) { r.Spec.Trainer.LearningRate = "fast" },
		"spec.trainer.learningRate", "spec.trainer.learningRate"},
	{"HTTP annotator without url", func(r *alignv1.AlignmentRun) {
		r.Spec.Labeler.Annotator = &alignv1.AnnotatorSpec{Kind: alignv1.AnnotatorHTTP}
	}, "annotator kinds HTTP, OpenAIJudge and RewardModel need url", "spec.labeler.annotator.url"},
	{"annotator token over plain http", func(r *alignv1.AlignmentRun) {
		r.Spec.Labeler.Annotator = &alignv1.AnnotatorSpec{Kind: alignv1.AnnotatorHTTP, URL: "http://rm.example/score",
			SecretRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "rm"}, Key: "token"}}
	}, "set allowInsecureHTTP: true", "spec.labeler.annotator.url"},
	{"Builtin annotator with a url", func(r *alignv1.AlignmentRun) {
		r.Spec.Labeler.Annotator = &alignv1.AnnotatorSpec{Kind: alignv1.AnnotatorBuiltin, Name: "sentiment", URL: "https://rm.example"}
	}, "annotator kind Builtin needs name", "spec.labeler.annotator"},
	{"OpenAIJudge without a model", func(r *alignv1.AlignmentRun) {
		r.Spec.Labeler.Annotator = &alignv1.AnnotatorSpec{Kind: alignv1.AnnotatorOpenAIJudge, URL: "https://judge.example/v1"}
	}, "annotator kind OpenAIJudge needs model", "spec.labeler.annotator.model"},
	{"RewardModel without a protocol", func(r *alignv1.AlignmentRun) {
		r.Spec.Labeler.Annotator = &alignv1.AnnotatorSpec{Kind: alignv1.AnnotatorRewardModel, URL: "https://rm.example/get_reward"}
	}, "annotator protocol (OpenRLHF or VLLMPooling) is required with kind RewardModel", "spec.labeler.annotator.protocol"},
	{"protocol on an HTTP annotator", func(r *alignv1.AlignmentRun) {
		r.Spec.Labeler.Annotator = &alignv1.AnnotatorSpec{Kind: alignv1.AnnotatorHTTP, URL: "https://rm.example/score", Protocol: alignv1.RewardOpenRLHF}
	}, "only allowed there", "spec.labeler.annotator.protocol"},
	{"model on an OpenRLHF reward model", func(r *alignv1.AlignmentRun) {
		r.Spec.Labeler.Annotator = &alignv1.AnnotatorSpec{Kind: alignv1.AnnotatorRewardModel, URL: "https://rm.example/get_reward", Protocol: alignv1.RewardOpenRLHF, Model: "rm"}
	}, "annotator model is only for kind OpenAIJudge", "spec.labeler.annotator.model"},
	{"promptTemplate on a reward model", func(r *alignv1.AlignmentRun) {
		r.Spec.Labeler.Annotator = &alignv1.AnnotatorSpec{Kind: alignv1.AnnotatorRewardModel, URL: "https://rm.example/pooling", Protocol: alignv1.RewardVLLMPooling, PromptTemplate: "{{.A}}"}
	}, "annotator promptTemplate and output are only for kind OpenAIJudge", "spec.labeler.annotator"},
	{"limits on a built-in annotator", func(r *alignv1.AlignmentRun) {
		r.Spec.Labeler.Annotator = &alignv1.AnnotatorSpec{Kind: alignv1.AnnotatorBuiltin, Name: "sentiment", Limits: &alignv1.AnnotatorLimits{MaxRequests: 5}}
	}, "annotator kind Builtin needs name (e.g. sentiment) and no url, secretRef or limits", "spec.labeler.annotator"},
	{"evaluator judge without a url", func(r *alignv1.AlignmentRun) {
		r.Spec.Evaluator.Judge = &alignv1.AnnotatorSpec{Kind: alignv1.AnnotatorOpenAIJudge, Model: "m"}
	}, "spec.evaluator.judge", "spec.evaluator.judge.url"},
	{"sampler engine OpenAI without url and model", func(r *alignv1.AlignmentRun) {
		r.Spec.Sampler.Engine = &alignv1.SamplerEngine{Kind: alignv1.SamplerEngineOpenAI}
	}, "sampler engine kind OpenAI needs url (the API base, e.g. http://vllm:8000/v1) and model", "spec.sampler.engine.url"},
	{"sampler engine OpenAI without model", func(r *alignv1.AlignmentRun) {
		r.Spec.Sampler.Engine = &alignv1.SamplerEngine{Kind: alignv1.SamplerEngineOpenAI, URL: "http://vllm:8000/v1"}
	}, "sampler engine kind OpenAI needs url", "spec.sampler.engine.model"},
	{"sampler engine url without a scheme", func(r *alignv1.AlignmentRun) {
		r.Spec.Sampler.Engine = &alignv1.SamplerEngine{Kind: alignv1.SamplerEngineOpenAI, URL: "vllm:8000/v1", Model: "m"}
	}, "sampler engine url must start with http:// or https://", "spec.sampler.engine.url"},
	{"sampler engine token over plain http", func(r *alignv1.AlignmentRun) {
		r.Spec.Sampler.Engine = &alignv1.SamplerEngine{Kind: alignv1.SamplerEngineOpenAI, URL: "http://vllm:8000/v1", Model: "m",
			SecretRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "vllm"}, Key: "token"}}
	}, "sampler engine: a secretRef's token is only sent to an https:// url; set allowInsecureHTTP: true", "spec.sampler.engine.url"},
	{"sampler engine Builtin with a url", func(r *alignv1.AlignmentRun) {
		r.Spec.Sampler.Engine = &alignv1.SamplerEngine{Kind: alignv1.SamplerEngineBuiltin, URL: "http://vllm:8000/v1"}
	}, "sampler engine kind Builtin takes no url", "spec.sampler.engine"},
	{"sampler engine maxConcurrency above 256", func(r *alignv1.AlignmentRun) {
		r.Spec.Sampler.Engine = &alignv1.SamplerEngine{Kind: alignv1.SamplerEngineOpenAI, URL: "http://vllm:8000/v1", Model: "m", MaxConcurrency: 300}
	}, "spec.sampler.engine.maxConcurrency", "spec.sampler.engine.maxConcurrency"},
	{"sampler engine relative workspacePath", func(r *alignv1.AlignmentRun) {
		r.Spec.Sampler.Engine = &alignv1.SamplerEngine{Kind: alignv1.SamplerEngineOpenAI, URL: "http://vllm:8000/v1", Model: "m", WorkspacePath: "workspace"}
	}, "spec.sampler.engine.workspacePath", "spec.sampler.engine.workspacePath"},
	{"workspace without a PVC or object store", func(r *alignv1.AlignmentRun) {
		r.Spec.Workspace = alignv1.WorkspaceSpec{Path: "/tmp/ws"}
	}, "spec.workspace: set exactly one of spec.workspace.persistentVolumeClaim", "spec.workspace"},
	{"workspace with a PVC and an object store", func(r *alignv1.AlignmentRun) {
		r.Spec.Workspace.ObjectStore = &alignv1.WorkspaceObjectStore{URI: "s3://bucket/runs"}
	}, "spec.workspace: set exactly one of spec.workspace.persistentVolumeClaim", "spec.workspace"},
	{"object store uri with credentials", func(r *alignv1.AlignmentRun) {
		r.Spec.Workspace = alignv1.WorkspaceSpec{ObjectStore: &alignv1.WorkspaceObjectStore{URI: "s3://AKIA:secret@bucket/runs"}}
	}, "spec.workspace.objectStore.uri must be s3://bucket[/prefix]", "spec.workspace.objectStore.uri"},
	{"object store uri of another scheme", func(r *alignv1.AlignmentRun) {
		r.Spec.Workspace = alignv1.WorkspaceSpec{ObjectStore: &alignv1.WorkspaceObjectStore{URI: "file:///tmp/ws"}}
	}, "spec.workspace.objectStore.uri must be s3://bucket[/prefix]", "spec.workspace.objectStore.uri"},
	{"object store endpoint without scheme", func(r *alignv1.AlignmentRun) {
		r.Spec.Workspace = alignv1.WorkspaceSpec{ObjectStore: &alignv1.WorkspaceObjectStore{URI: "s3://bucket", Endpoint: "minio:9000"}}
	}, "spec.workspace.objectStore.endpoint must start with http://", "spec.workspace.objectStore.endpoint"},
	{"object store secretRef on gs", func(r *alignv1.AlignmentRun) {
		r.Spec.Workspace = alignv1.WorkspaceSpec{ObjectStore: &alignv1.WorkspaceObjectStore{URI: "gs://bucket", SecretRef: &alignv1.ObjectStoreSecretRef{Name: "s3"}}}
	}, "spec.workspace.objectStore.secretRef is for s3:// buckets", "spec.workspace.objectStore.secretRef"},
	{"object store with a subPath", func(r *alignv1.AlignmentRun) {
		r.Spec.Workspace = alignv1.WorkspaceSpec{SubPath: "runs", ObjectStore: &alignv1.WorkspaceObjectStore{URI: "s3://bucket"}}
	}, "spec.workspace.subPath is for a volume", "spec.workspace.subPath"},
	{"object store with a custom stage command", func(r *alignv1.AlignmentRun) {
		r.Spec.Workspace = alignv1.WorkspaceSpec{ObjectStore: &alignv1.WorkspaceObjectStore{URI: "s3://bucket"}}
		r.Spec.Trainer.Command = []string{"python", "train.py"}
	}, "spec.workspace.objectStore works with the bpo stage commands only", "spec.workspace.objectStore"},
	{"output uri with credentials", func(r *alignv1.AlignmentRun) {
		r.Spec.Output = &alignv1.OutputSpec{URI: "s3://AKIA:secret@bucket/models"}
	}, "spec.output.uri must be s3://bucket[/prefix]", "spec.output.uri"},
	{"output uri of another scheme", func(r *alignv1.AlignmentRun) {
		r.Spec.Output = &alignv1.OutputSpec{URI: "file:///tmp/models"}
	}, "spec.output.uri must be s3://bucket[/prefix]", "spec.output.uri"},
	{"output endpoint without scheme", func(r *alignv1.AlignmentRun) {
		r.Spec.Output = &alignv1.OutputSpec{URI: "s3://bucket", Endpoint: "minio:9000"}
	}, "spec.output.endpoint must start with http://", "spec.output.endpoint"},
	{"output secretRef on gs", func(r *alignv1.AlignmentRun) {
		r.Spec.Output = &alignv1.OutputSpec{URI: "gs://bucket", SecretRef: &alignv1.ObjectStoreSecretRef{Name: "s3"}}
	}, "spec.output.secretRef is for s3:// buckets", "spec.output.secretRef"},
	{"output region with capitals", func(r *alignv1.AlignmentRun) {
		r.Spec.Output = &alignv1.OutputSpec{URI: "s3://bucket", Region: "EU-West-1"}
	}, "spec.output.region", "spec.output.region"},
	{"model builtin and uri", func(r *alignv1.AlignmentRun) { r.Spec.Model.URI = "s3://bucket/models/sft" },
		"spec.model: set exactly one of spec.model.builtin", "spec.model"},
	{"model uri without a path", func(r *alignv1.AlignmentRun) { r.Spec.Model = alignv1.ModelSpec{URI: "s3://bucket"} },
		"spec.model.uri must be s3://bucket/path", "spec.model.uri"},
	{"model uri of an image with capitals", func(r *alignv1.AlignmentRun) {
		r.Spec.Model = alignv1.ModelSpec{URI: "oci://ghcr.io/Org/Model:v1"}
	}, "or oci://registry/repository:tag of an image holding one", "spec.model.uri"},
	{"model uri of an image without a repository", func(r *alignv1.AlignmentRun) { r.Spec.Model = alignv1.ModelSpec{URI: "oci://gpt2"} },
		"or oci://registry/repository:tag of an image holding one", "spec.model.uri"},
	{"backoffLimit above 20", func(r *alignv1.AlignmentRun) { r.Spec.BackoffLimit = ptr.To(int32(21)) },
		"spec.backoffLimit", "spec.backoffLimit"},
	{"name longer than 40", func(r *alignv1.AlignmentRun) { r.Name = strings.Repeat("a", 41) },
		"metadata.name must be at most 40 characters", "metadata.name"},
	{"name not an RFC 1123 label", func(r *alignv1.AlignmentRun) { r.Name = "run.v2" },
		"metadata.name must be an RFC 1123 label", "metadata.name"},
}

// ImmutableCase is an update of a running run's recipe that the API server must reject.
type ImmutableCase struct {
	Name       string
	Mutate     func(*alignv1.AlignmentRun)
	APIMessage string
}

// ImmutableCases apply to a stored MakeRun object.
var ImmutableCases = []ImmutableCase{
	{"model", func(r *alignv1.AlignmentRun) { r.Spec.Model.Builtin = "tiny-other" }, "spec.model is immutable: create a new AlignmentRun"},
	{"loss", func(r *alignv1.AlignmentRun) { r.Spec.Loss.Beta = "0.2" }, "spec.loss is immutable: create a new AlignmentRun"},
	{"trustRegion reference", func(r *alignv1.AlignmentRun) { r.Spec.TrustRegion.Reference = alignv1.ReferenceInitial }, "spec.trustRegion is immutable"},
	{"trustRegion phases", func(r *alignv1.AlignmentRun) { r.Spec.TrustRegion.Phases = 4 }, "spec.trustRegion is immutable"},
	{"budget", func(r *alignv1.AlignmentRun) { r.Spec.Budget.Pairs = 128 }, "spec.budget is immutable"},
	{"ensemble", func(r *alignv1.AlignmentRun) { r.Spec.Ensemble.Rank = 4 }, "spec.ensemble is immutable"},
	{"data", func(r *alignv1.AlignmentRun) { r.Spec.Data.Builtin = "other" }, "spec.data is immutable"},
	{"workspace", func(r *alignv1.AlignmentRun) { r.Spec.Workspace.SubPath = "elsewhere" }, "spec.workspace is immutable"},
	{"sampler temperature", func(r *alignv1.AlignmentRun) { r.Spec.Sampler.Temperature = "0.7" }, "spec.sampler.temperature is immutable"},
	{"sampler topK added", func(r *alignv1.AlignmentRun) { r.Spec.Sampler.TopK = ptr.To(int32(40)) }, "spec.sampler.topK and spec.sampler.topP cannot be added or removed"},
	{"sampler engine added", func(r *alignv1.AlignmentRun) {
		r.Spec.Sampler.Engine = &alignv1.SamplerEngine{Kind: alignv1.SamplerEngineOpenAI, URL: "http://vllm:8000/v1", Model: "m"}
	}, "spec.sampler.engine cannot be added or removed after creation"},
	{"sampler maxNewTokens", func(r *alignv1.AlignmentRun) { r.Spec.Sampler.MaxNewTokens = 64 }, "spec.sampler.maxNewTokens is immutable"},
	{"annotator", func(r *alignv1.AlignmentRun) { r.Spec.Labeler.Annotator.Name = "other" }, "spec.labeler.annotator is immutable"},
	{"trainer learningRate", func(r *alignv1.AlignmentRun) { r.Spec.Trainer.LearningRate = "1e-4" }, "spec.trainer.learningRate is immutable"},
	{"evaluator everyPhase", func(r *alignv1.AlignmentRun) { r.Spec.Evaluator.EveryPhase = true }, "spec.evaluator.everyPhase is immutable"},
}

// MutableCases are updates the API server must accept on a stored run.
var MutableCases = map[string]func(*alignv1.AlignmentRun){
	"suspend":               func(r *alignv1.AlignmentRun) { r.Spec.Suspend = ptr.To(true) },
	"activeDeadlineSeconds": func(r *alignv1.AlignmentRun) { r.Spec.ActiveDeadlineSeconds = ptr.To(int64(3600)) },
	"backoffLimit":          func(r *alignv1.AlignmentRun) { r.Spec.BackoffLimit = ptr.To(int32(5)) },
	"ttl":                   func(r *alignv1.AlignmentRun) { r.Spec.TTLSecondsAfterFinished = ptr.To(int32(60)) },
	"scheduling fields": func(r *alignv1.AlignmentRun) {
		r.Spec.Trainer.Image = "example.com/bpo:v2"
		r.Spec.Sampler.Parallelism = ptr.To(int32(4))
		r.Spec.Labeler.Parallelism = ptr.To(int32(3))
		r.Spec.Sampler.NodeSelector = map[string]string{"pool": "cpu"}
		r.Spec.Evaluator.Env = append(r.Spec.Evaluator.Env, corev1.EnvVar{Name: "X", Value: "1"})
	},
}
