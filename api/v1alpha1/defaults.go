package v1alpha1

import (
	"slices"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Default values; the CRD schema carries the same values as +kubebuilder:default markers and a
// test (controllers) checks that SetDefaults and the API server agree.
const (
	DefaultBeta             Decimal = "0.1"
	DefaultPhases           int32   = 2
	DefaultPairsPerStep     int32   = 16
	DefaultEvalPrompts      int32   = 64
	DefaultEpochsPerPhase   int32   = 1
	DefaultSamplesPerPrompt int32   = 2
	DefaultMembers          int32   = 5
	DefaultRank             int32   = 8
	DefaultAlpha            int32   = 16
	DefaultTemperature      Decimal = "1.0"
	DefaultMaxNewTokens     int32   = 32
	DefaultLearningRate     Decimal = "5e-5"
	DefaultMaxGradNorm      Decimal = "1.0"
	DefaultBackoffLimit     int32   = 2
	DefaultSeed             int64   = 1
	DefaultAnnotator                = "sentiment"
	DefaultPromptsKey               = "prompts.jsonl"
	DefaultEvalKey                  = "eval.jsonl"
)

// SetDefaults fills unset fields with the schema defaults. The API server does this for
// objects it stores (the controller never mutates spec); the local runner `bpo run -f`, which
// reads the same YAML without an API server, calls it before ValidateLocal.
func (r *AlignmentRun) SetDefaults() {
	s := &r.Spec
	if s.Model.Tokenizer == "" {
		s.Model.Tokenizer = TokenizerAuto
	}
	if s.Loss.Type == "" {
		s.Loss.Type = LossDPO
	}
	if s.Loss.Beta == "" {
		s.Loss.Beta = DefaultBeta
	}
	if s.Loss.IPOLengthNormalize == nil {
		s.Loss.IPOLengthNormalize = ptr(true)
	}
	if s.TrustRegion.Reference == "" {
		s.TrustRegion.Reference = ReferenceBehavior
	}
	for _, d := range s.DefaultedInts() {
		if *d.Value == 0 {
			*d.Value = d.Default
		}
	}
	if cm := s.Data.ConfigMap; cm != nil {
		if cm.PromptsKey == "" {
			cm.PromptsKey = DefaultPromptsKey
		}
		if cm.EvalKey == "" {
			cm.EvalKey = DefaultEvalKey
		}
	}
	if s.Sampler.Parallelism == nil {
		s.Sampler.Parallelism = ptr(int32(1))
	}
	if s.Sampler.Temperature == "" {
		s.Sampler.Temperature = DefaultTemperature
	}
	if s.Sampler.Engine != nil && s.Sampler.Engine.Kind == "" {
		s.Sampler.Engine.Kind = SamplerEngineBuiltin
	}
	if s.Labeler.Parallelism == nil {
		s.Labeler.Parallelism = ptr(int32(1))
	}
	if s.Labeler.Annotator == nil {
		s.Labeler.Annotator = &AnnotatorSpec{Kind: AnnotatorBuiltin, Name: DefaultAnnotator}
	} else if s.Labeler.Annotator.Kind == "" {
		s.Labeler.Annotator.Kind = AnnotatorBuiltin
	}
	if s.Trainer.LearningRate == "" {
		s.Trainer.LearningRate = DefaultLearningRate
	}
	if s.Trainer.MaxGradNorm == "" {
		s.Trainer.MaxGradNorm = DefaultMaxGradNorm
	}
	if s.Evaluator.Baseline == nil {
		s.Evaluator.Baseline = ptr(true)
	}
	if s.Evaluator.Report == nil {
		s.Evaluator.Report = ptr(true)
	}
	if s.Seed == nil { // a pointer: an explicit seed 0 is a seed, not "unset"
		s.Seed = ptr(DefaultSeed)
	}
	if s.Suspend == nil {
		s.Suspend = ptr(false)
	}
	if s.BackoffLimit == nil {
		s.BackoffLimit = ptr(DefaultBackoffLimit)
	}
}

// DefaultedInt is an integer field of the spec whose zero value stands for "unset": Go cannot
// tell an absent field from an explicit 0, so SetDefaults gives both the default. The API
// server can (an explicit 0 fails the field's minimum); the local runner finds explicit zeros
// with these pointers (pipeline.DecodeRun) so that they fail validation there too.
// +kubebuilder:object:generate=false
type DefaultedInt struct {
	Path    *field.Path
	Value   *int32
	Default int32
}

// DefaultedInts lists the spec's defaulted integer fields, pointing into s.
func (s *AlignmentRunSpec) DefaultedInts() []DefaultedInt {
	p := field.NewPath("spec")
	return []DefaultedInt{
		{p.Child("trustRegion", "phases"), &s.TrustRegion.Phases, DefaultPhases},
		{p.Child("budget", "pairsPerStep"), &s.Budget.PairsPerStep, DefaultPairsPerStep},
		{p.Child("budget", "evalPrompts"), &s.Budget.EvalPrompts, DefaultEvalPrompts},
		{p.Child("budget", "epochsPerPhase"), &s.Budget.EpochsPerPhase, DefaultEpochsPerPhase},
		{p.Child("budget", "samplesPerPrompt"), &s.Budget.SamplesPerPrompt, DefaultSamplesPerPrompt},
		{p.Child("ensemble", "members"), &s.Ensemble.Members, DefaultMembers},
		{p.Child("ensemble", "rank"), &s.Ensemble.Rank, DefaultRank},
		{p.Child("ensemble", "alpha"), &s.Ensemble.Alpha, DefaultAlpha},
		{p.Child("sampler", "maxNewTokens"), &s.Sampler.MaxNewTokens, DefaultMaxNewTokens},
		{p.Child("evaluator", "samplesPerPrompt"), &s.Evaluator.SamplesPerPrompt, 1},
	}
}

func ptr[T any](v T) *T { return &v }

// IsSuspended reports spec.suspend.
func (s *AlignmentRunSpec) IsSuspended() bool { return s.Suspend != nil && *s.Suspend }

// BackoffLimitOrDefault is spec.backoffLimit, or its default when unset.
func (s *AlignmentRunSpec) BackoffLimitOrDefault() int32 {
	if s.BackoffLimit == nil {
		return DefaultBackoffLimit
	}
	return *s.BackoffLimit
}

// FirstPhase is where a run starts: 0 (the initial model's evaluation, the baseline) when
// evaluator.baseline is on, else 1.
func (s *AlignmentRunSpec) FirstPhase() int32 {
	if s.Evaluator.BaselineEnabled() {
		return 0
	}
	return 1
}

// Stages lists the stages of phase k in order, the walk both the controller and the local
// runner take for k = FirstPhase()..F: phase 0 is the baseline eval alone; every phase has
// sample, label, train, and eval when evaluator.everyPhase is set or k is the last phase; the
// last phase ends with the report stage when evaluator.report is on; with spec.output, the last
// phase (and with output.everyPhase every phase) ends with the export stage.
func (s *AlignmentRunSpec) Stages(k int32) []string {
	if k == 0 {
		if s.Evaluator.BaselineEnabled() {
			return []string{StageEval}
		}
		return nil
	}
	st := []string{StageSample, StageLabel, StageTrain}
	if s.Evaluator.EveryPhase || k >= s.TrustRegion.Phases {
		st = append(st, StageEval)
	}
	if k == s.TrustRegion.Phases && s.Evaluator.ReportEnabled() && s.Evaluator.BaselineEnabled() {
		st = append(st, StageReport)
	}
	if s.Output != nil && (s.ExportsEveryPhase() || k >= s.TrustRegion.Phases) {
		st = append(st, StageExport)
	}
	return st
}

// HasCompleted reports whether stage is listed in the phase's completedStages.
func (p *PhaseResult) HasCompleted(stage string) bool {
	return slices.Contains(p.CompletedStages, stage)
}

// ExportsEveryPhase reports spec.output.everyPhase: an export stage ends every phase, not only
// the last.
func (s *AlignmentRunSpec) ExportsEveryPhase() bool { return s.Output != nil && s.Output.EveryPhase }
