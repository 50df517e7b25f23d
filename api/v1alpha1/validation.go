package v1alpha1

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

// The Go side of admission validation. The CRD's OpenAPI schema and CEL rules are the first
// line; Validate repeats the essential checks so that the controller (and the local runner)
// refuse a spec that reached them without those rules (old clusters, `bpo run -f`). The
// controller reports a non-empty result as Failed=True with reason InvalidSpec. Validate
// expects a defaulted object (the API server applies the schema defaults; the local runner
// calls SetDefaults first).

var (
	decimalRE = regexp.MustCompile(`^([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][-+]?[0-9]+)?$`)
	nameRE    = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)
	labelRE   = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	keyRE     = regexp.MustCompile(`^[-._a-zA-Z0-9]+$`)
)

// Float64 parses the decimal string.
func (d Decimal) Float64() (float64, error) {
	if !decimalRE.MatchString(string(d)) {
		return 0, fmt.Errorf("%q is not a decimal number such as \"0.1\" or \"5e-5\"", string(d))
	}
	v, err := strconv.ParseFloat(string(d), 64)
	if err != nil || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, fmt.Errorf("%q is not a finite decimal number", string(d))
	}
	return v, nil
}

// Validate checks a defaulted AlignmentRun for a cluster: the rules of the CRD's schema that
// matter to the controller, with messages naming the field and the fix.
func (r *AlignmentRun) Validate() field.ErrorList {
	return r.validate(false)
}

// ValidateLocal is Validate for the local runner `bpo run`: spec.workspace.path may replace
// spec.workspace.persistentVolumeClaim.
func (r *AlignmentRun) ValidateLocal() field.ErrorList {
	return r.validate(true)
}

func (r *AlignmentRun) validate(local bool) field.ErrorList {
	var errs field.ErrorList
	name := field.NewPath("metadata", "name")
	switch {
	case r.Name == "":
		errs = append(errs, field.Required(name, "set metadata.name"))
	case len(r.Name) > MaxRunNameLength:
		errs = append(errs, field.TooLong(name, r.Name, MaxRunNameLength))
	case !labelRE.MatchString(r.Name):
		errs = append(errs, field.Invalid(name, r.Name,
			"must be an RFC 1123 label (lower-case letters, digits and '-', starting and ending with a letter or digit): rename the run"))
	}
	return append(errs, r.Spec.validate(field.NewPath("spec"), local)...)
}

// Validate checks the spec alone (see AlignmentRun.Validate).
func (s *AlignmentRunSpec) Validate() field.ErrorList {
	return s.validate(field.NewPath("spec"), false)
}

func (s *AlignmentRunSpec) validate(p *field.Path, local bool) field.ErrorList {
	var errs field.ErrorList

	// model
	mp := p.Child("model")
	switch n := countSet(s.Model.Builtin, s.Model.Path, s.Model.URI); {
	case n == 0:
		errs = append(errs, field.Required(mp, "set exactly one of spec.model.builtin (e.g. tiny-reviews), spec.model.path or spec.model.uri"))
	case n > 1:
		errs = append(errs, field.Forbidden(mp, "set exactly one of spec.model.builtin, spec.model.path or spec.model.uri, not several"))
	case s.Model.Builtin != "" && !nameRE.MatchString(s.Model.Builtin):
		errs = append(errs, field.Invalid(mp.Child("builtin"), s.Model.Builtin, "must be a lower-case name such as tiny-reviews"))
	case s.Model.Path != "":
		errs = append(errs, validateRelPath(mp.Child("path"), s.Model.Path)...)
	case s.Model.URI != "" && !modelURIRE.MatchString(s.Model.URI) && !ociRefRE.MatchString(s.Model.URI):
		errs = append(errs, field.Invalid(mp.Child("uri"), s.Model.URI, "must be s3://bucket/path or gs://bucket/path to a checkpoint folder, without credentials, or oci://registry/repository:tag of an image holding one"))
	}
	switch s.Model.Tokenizer {
	case TokenizerByte, TokenizerGPT2BPE, TokenizerAuto:
	default:
		errs = append(errs, field.NotSupported(mp.Child("tokenizer"), s.Model.Tokenizer,
			[]TokenizerType{TokenizerByte, TokenizerGPT2BPE, TokenizerAuto}))
	}

	// loss
	lp := p.Child("loss")
	switch s.Loss.Type {
	case LossDPO, LossIPO, LossSLiC:
	default:
		errs = append(errs, field.NotSupported(lp.Child("type"), s.Loss.Type, []LossType{LossDPO, LossIPO, LossSLiC}))
	}
	errs = append(errs, validateDecimal(lp.Child("beta"), s.Loss.Beta, 0, math.Inf(1), `"0.1"`)...)
	if s.Loss.LengthAlpha != "" {
		a, err := s.Loss.LengthAlpha.Float64()
		switch {
		case err != nil || a < 0 || math.IsInf(a, 0):
			errs = append(errs, field.Invalid(lp.Child("lengthAlpha"), string(s.Loss.LengthAlpha),
				`must be a decimal greater than or equal to 0, e.g. "0.1"`))
		case a > 0 && s.Loss.Type == LossIPO && (s.Loss.IPOLengthNormalize == nil || *s.Loss.IPOLengthNormalize):
			errs = append(errs, field.Invalid(lp.Child("lengthAlpha"), string(s.Loss.LengthAlpha),
				`needs summed log-probs: with IPO set spec.loss.ipoLengthNormalize to false, or lengthAlpha to "0"`))
		}
	}

	// trust region
	tp := p.Child("trustRegion")
	switch s.TrustRegion.Reference {
	case ReferenceBehavior, ReferenceInitial, ReferenceEMA, ReferenceFixed:
	default:
		errs = append(errs, field.NotSupported(tp.Child("reference"), s.TrustRegion.Reference,
			[]ReferenceType{ReferenceBehavior, ReferenceInitial, ReferenceEMA, ReferenceFixed}))
	}
	if s.TrustRegion.Reference == ReferenceEMA {
		if s.TrustRegion.EMAAlpha == nil {
			errs = append(errs, field.Required(tp.Child("emaAlpha"), "required when spec.trustRegion.reference is EMA: set e.g. \"0.01\""))
		} else {
			errs = append(errs, validateDecimal(tp.Child("emaAlpha"), *s.TrustRegion.EMAAlpha, 0, 1, `"0.01"`)...)
		}
	} else if s.TrustRegion.EMAAlpha != nil {
		errs = append(errs, field.Forbidden(tp.Child("emaAlpha"), "only allowed when spec.trustRegion.reference is EMA: remove it"))
	}
	if s.TrustRegion.Reference == ReferenceFixed {
		if s.TrustRegion.FixedCheckpoint == nil || *s.TrustRegion.FixedCheckpoint == "" {
			errs = append(errs, field.Required(tp.Child("fixedCheckpoint"), "required when spec.trustRegion.reference is Fixed: set a checkpoint directory relative to the workspace"))
		} else {
			if fc := *s.TrustRegion.FixedCheckpoint; !IsModelURI(fc) {
				errs = append(errs, validateRelPath(tp.Child("fixedCheckpoint"), fc)...)
			} else if !modelURIRE.MatchString(fc) {
				errs = append(errs, field.Invalid(tp.Child("fixedCheckpoint"), fc, "must be s3://bucket/path or gs://bucket/path to a checkpoint folder, without credentials"))
			}
		}
	} else if s.TrustRegion.FixedCheckpoint != nil {
		errs = append(errs, field.Forbidden(tp.Child("fixedCheckpoint"), "only allowed when spec.trustRegion.reference is Fixed: remove it"))
	}
	errs = append(errs, validateRange(tp.Child("phases"), int64(s.TrustRegion.Phases), 1, MaxPhases)...)

	// budget
	bp := p.Child("budget")
	errs = append(errs, validateRange(bp.Child("pairs"), int64(s.Budget.Pairs), 1, 10000000)...)
	errs = append(errs, validateRange(bp.Child("pairsPerStep"), int64(s.Budget.PairsPerStep), 1, 65536)...)
	errs = append(errs, validateRange(bp.Child("evalPrompts"), int64(s.Budget.EvalPrompts), 1, 1000000)...)
	errs = append(errs, validateRange(bp.Child("epochsPerPhase"), int64(s.Budget.EpochsPerPhase), 1, 100)...)
	errs = append(errs, validateRange(bp.Child("samplesPerPrompt"), int64(s.Budget.SamplesPerPrompt), 2, 16)...)
	if f := s.TrustRegion.Phases; f >= 1 && s.Budget.Pairs >= 1 {
		if s.Budget.Pairs%f != 0 {
			errs = append(errs, field.Invalid(bp.Child("pairs"), s.Budget.Pairs, fmt.Sprintf(
				"must be divisible by spec.trustRegion.phases (%d): change spec.budget.pairs or spec.trustRegion.phases", f)))
		} else if s.Budget.PairsPerStep >= 1 && s.Budget.Pairs/f < s.Budget.PairsPerStep {
			errs = append(errs, field.Invalid(bp.Child("pairs"), s.Budget.Pairs, fmt.Sprintf(
				"spec.budget.pairs / spec.trustRegion.phases (%d) must be at least spec.budget.pairsPerStep (%d): raise pairs or lower phases or pairsPerStep",
				s.Budget.Pairs/f, s.Budget.PairsPerStep)))
		}
	}

	// ensemble
	ep := p.Child("ensemble")
	errs = append(errs, validateRange(ep.Child("members"), int64(s.Ensemble.Members), 1, MaxMembers)...)
	errs = append(errs, validateRange(ep.Child("rank"), int64(s.Ensemble.Rank), 1, 1024)...)
	errs = append(errs, validateRange(ep.Child("alpha"), int64(s.Ensemble.Alpha), 1, 4096)...)

	if s.Seed != nil && *s.Seed < 0 {
		errs = append(errs, field.Invalid(p.Child("seed"), *s.Seed, "must be 0 or more (omit it for the default, 1)"))
	}

	// data
	dp := p.Child("data")
	n := 0
	if s.Data.Builtin != "" {
		n++
		if !nameRE.MatchString(s.Data.Builtin) {
			errs = append(errs, field.Invalid(dp.Child("builtin"), s.Data.Builtin, "must be a lower-case task name such as reviews"))
		}
	}
	if s.Data.ConfigMap != nil {
		n++
		cp := dp.Child("configMap")
		if s.Data.ConfigMap.Name == "" {
			errs = append(errs, field.Required(cp.Child("name"), "set the name of a ConfigMap in the run's namespace"))
		}
		for _, k := range []struct {
			name, val string
		}{{"promptsKey", s.Data.ConfigMap.PromptsKey}, {"evalKey", s.Data.ConfigMap.EvalKey}} {
			if !keyRE.MatchString(k.val) {
				errs = append(errs, field.Invalid(cp.Child(k.name), k.val, "must be a ConfigMap key (letters, digits, '-', '_', '.')"))
			}
		}
	}
	if s.Data.Path != "" {
		n++
		errs = append(errs, validateRelPath(dp.Child("path"), s.Data.Path)...)
	}
	if n != 1 {
		errs = append(errs, field.Invalid(dp, n, "set exactly one of spec.data.builtin (e.g. reviews), spec.data.configMap or spec.data.path"))
	}

	// stages
	sp := p.Child("sampler")
	errs = append(errs, validateStage(sp, &s.Sampler.StageTemplate)...)
	errs = append(errs, validateParallelism(sp.Child("parallelism"), s.Sampler.Parallelism)...)
	errs = append(errs, validateDecimal(sp.Child("temperature"), s.Sampler.Temperature, 0, math.Inf(1), `"1.0"`)...)
	if s.Sampler.TopK != nil {
		errs = append(errs, validateRange(sp.Child("topK"), int64(*s.Sampler.TopK), 1, 1000000)...)
	}
	if s.Sampler.TopP != nil {
		errs = append(errs, validateDecimal(sp.Child("topP"), *s.Sampler.TopP, 0, 1, `"0.9"`)...)
	}
	errs = append(errs, validateRange(sp.Child("maxNewTokens"), int64(s.Sampler.MaxNewTokens), 1, 8192)...)
	if e := s.Sampler.Engine; e != nil {
		errs = append(errs, validateSamplerEngine(sp.Child("engine"), *e)...)
	}

	lbp := p.Child("labeler")
	errs = append(errs, validateStage(lbp, &s.Labeler.StageTemplate)...)
	errs = append(errs, validateParallelism(lbp.Child("parallelism"), s.Labeler.Parallelism)...)
	errs = append(errs, validateAnnotator(lbp.Child("annotator"), annotatorOrDefault(s.Labeler.Annotator))...)

	trp := p.Child("trainer")
	errs = append(errs, validateStage(trp, &s.Trainer.StageTemplate)...)
	errs = append(errs, validateDecimal(trp.Child("learningRate"), s.Trainer.LearningRate, 0, math.Inf(1), `"5e-5"`)...)
	errs = append(errs, validateDecimal(trp.Child("maxGradNorm"), s.Trainer.MaxGradNorm, 0, math.Inf(1), `"1.0"`)...)

	evp := p.Child("evaluator")
	errs = append(errs, validateStage(evp, &s.Evaluator.StageTemplate)...)
	errs = append(errs, validateRange(evp.Child("samplesPerPrompt"), int64(s.Evaluator.SamplesPerPrompt), 1, 16)...)
	if j := s.Evaluator.Judge; j != nil {
		errs = append(errs, validateAnnotator(evp.Child("judge"), annotatorOrDefault(j))...)
	}

	// workspace
	wp := p.Child("workspace")
	ws := &s.Workspace
	switch {
	case ws.PersistentVolumeClaim != nil && ws.ObjectStore != nil:
		errs = append(errs, field.Forbidden(wp, "set exactly one of spec.workspace.persistentVolumeClaim (a volume) or spec.workspace.objectStore (a bucket), not both"))
	case ws.PersistentVolumeClaim != nil:
		if ws.PersistentVolumeClaim.ClaimName == "" {
			errs = append(errs, field.Required(wp.Child("persistentVolumeClaim", "claimName"), "set the name of a PersistentVolumeClaim in the run's namespace"))
		}
	case ws.ObjectStore != nil:
		errs = append(errs, validateObjectStore(wp.Child("objectStore"), ws.ObjectStore, local)...)
		if ws.SubPath != "" {
			errs = append(errs, field.Forbidden(wp.Child("subPath"), "spec.workspace.subPath is for a volume: with spec.workspace.objectStore put the prefix in the uri (s3://bucket/prefix)"))
		}
		if !local && s.hasStageCommand() {
			errs = append(errs, field.Forbidden(wp.Child("objectStore"), "works with the bpo stage commands only (they stage the workspace in and out of the bucket): remove spec.<stage>.command or use a persistentVolumeClaim"))
		}
	case local && ws.Path != "":
	case local:
		errs = append(errs, field.Required(wp, "set spec.workspace.path (a local directory), spec.workspace.objectStore or spec.workspace.persistentVolumeClaim"))
	default:
		errs = append(errs, field.Required(wp, "set exactly one of spec.workspace.persistentVolumeClaim (a volume) or spec.workspace.objectStore (a bucket) in a cluster (spec.workspace.path is only read by the local runner)"))
	}
	if s.Workspace.SubPath != "" {
		errs = append(errs, validateRelPath(wp.Child("subPath"), s.Workspace.SubPath)...)
	}
	if o := s.Output; o != nil {
		errs = append(errs, validateStore(p.Child("output"), o.URI, o.Endpoint, o.Region, o.SecretRef, local)...)
	}

	// lifecycle
	if s.ActiveDeadlineSeconds != nil && *s.ActiveDeadlineSeconds < 1 {
		errs = append(errs, field.Invalid(p.Child("activeDeadlineSeconds"), *s.ActiveDeadlineSeconds, "must be at least 1 (or unset for no deadline)"))
	}
	if s.BackoffLimit != nil {
		errs = append(errs, validateRange(p.Child("backoffLimit"), int64(*s.BackoffLimit), 0, MaxBackoffLimit)...)
	}
	if s.TTLSecondsAfterFinished != nil && *s.TTLSecondsAfterFinished < 0 {
		errs = append(errs, field.Invalid(p.Child("ttlSecondsAfterFinished"), *s.TTLSecondsAfterFinished, "must be at least 0 (or unset to keep children)"))
	}
	return errs
}

// annotatorOrDefault returns the annotator, or the default one when unset.
// validateAnnotator checks an annotator spec (spec.labeler.annotator, spec.evaluator.judge) as
// the CRD's CEL rules do, for runs that never met the API server (bpo run -f).
func validateAnnotator(ap *field.Path, a AnnotatorSpec) field.ErrorList {
	var errs field.ErrorList
	if a.Kind == "" {
		a.Kind = AnnotatorBuiltin
	}
	switch a.Kind {
	case AnnotatorBuiltin:
		if a.Name == "" {
			errs = append(errs, field.Required(ap.Child("name"), "kind Builtin needs a name, e.g. sentiment"))
		} else if !nameRE.MatchString(a.Name) {
			errs = append(errs, field.Invalid(ap.Child("name"), a.Name, "must be a lower-case annotator name such as sentiment"))
		}
		if a.URL != "" || a.SecretRef != nil || a.Limits != nil {
			errs = append(errs, field.Forbidden(ap, "kind Builtin takes no url, secretRef or limits: remove them or use a remote kind (HTTP, OpenAIJudge, RewardModel)"))
		}
	case AnnotatorHTTP, AnnotatorOpenAIJudge, AnnotatorRewardModel:
		if !strings.HasPrefix(a.URL, "http://") && !strings.HasPrefix(a.URL, "https://") {
			errs = append(errs, field.Invalid(ap.Child("url"), a.URL, fmt.Sprintf("kind %s needs a url starting with http:// or https://", a.Kind)))
		}
		if a.Name != "" {
			errs = append(errs, field.Forbidden(ap.Child("name"), fmt.Sprintf("kind %s takes no name: remove it or use kind Builtin", a.Kind)))
		}
		if a.SecretRef != nil && (a.SecretRef.Name == "" || a.SecretRef.Key == "") {
			errs = append(errs, field.Required(ap.Child("secretRef"), "set both name and key of the Secret"))
		}
		if a.SecretRef != nil && strings.HasPrefix(a.URL, "http://") && !a.AllowInsecureHTTP {
			errs = append(errs, field.Invalid(ap.Child("url"), a.URL, "a secretRef's token is only sent to an https:// url; set allowInsecureHTTP: true to send it over http:// (an in-cluster service without TLS)"))
		}
	default:
		errs = append(errs, field.NotSupported(ap.Child("kind"), a.Kind, []AnnotatorKind{AnnotatorBuiltin, AnnotatorHTTP, AnnotatorOpenAIJudge, AnnotatorRewardModel}))
	}
	if a.Kind == AnnotatorOpenAIJudge && a.Model == "" {
		errs = append(errs, field.Required(ap.Child("model"), "kind OpenAIJudge needs the name of the model the server serves"))
	}
	if a.Model != "" && a.Kind != AnnotatorOpenAIJudge && !(a.Kind == AnnotatorRewardModel && a.Protocol == RewardVLLMPooling) {
		errs = append(errs, field.Forbidden(ap.Child("model"), "model is only for kind OpenAIJudge, or kind RewardModel with protocol VLLMPooling (OpenRLHF's server serves one model)"))
	}
	switch {
	case a.Kind == AnnotatorRewardModel && a.Protocol == "":
		errs = append(errs, field.Required(ap.Child("protocol"), "kind RewardModel needs a protocol: OpenRLHF or VLLMPooling"))
	case a.Kind == AnnotatorRewardModel && a.Protocol != RewardOpenRLHF && a.Protocol != RewardVLLMPooling:
		errs = append(errs, field.NotSupported(ap.Child("protocol"), a.Protocol, []RewardProtocol{RewardOpenRLHF, RewardVLLMPooling}))
	case a.Kind != AnnotatorRewardModel && a.Protocol != "":
		errs = append(errs, field.Forbidden(ap.Child("protocol"), "protocol is only for kind RewardModel"))
	}
	if a.Kind != AnnotatorOpenAIJudge && (a.PromptTemplate != "" || a.Output != "") {
		errs = append(errs, field.Forbidden(ap, "promptTemplate and output are only for kind OpenAIJudge"))
	}
	switch a.Output {
	case "", JudgeOutputAuto, JudgeOutputJSON, JudgeOutputText:
	default:
		errs = append(errs, field.NotSupported(ap.Child("output"), a.Output, []JudgeOutput{JudgeOutputAuto, JudgeOutputJSON, JudgeOutputText}))
	}
	if l := a.Limits; l != nil {
		lp := ap.Child("limits")
		if l.MaxConcurrency != 0 {
			errs = append(errs, validateRange(lp.Child("maxConcurrency"), int64(l.MaxConcurrency), 1, 256)...)
		}
		for _, v := range []struct {
			name string
			v    int64
		}{{"requestsPerMinute", int64(l.RequestsPerMinute)}, {"tokensPerMinute", l.TokensPerMinute}, {"maxRequests", l.MaxRequests}, {"maxTokens", l.MaxTokens}} {
			if v.v < 0 {
				errs = append(errs, field.Invalid(lp.Child(v.name), v.v, "must be >= 0 (0: no limit)"))
			}
		}
	}
	return errs
}

// validateSamplerEngine checks spec.sampler.engine as the CRD's CEL rules do.
func validateSamplerEngine(p *field.Path, e SamplerEngine) field.ErrorList {
	var errs field.ErrorList
	switch e.Kind {
	case "", SamplerEngineBuiltin:
		if e.URL != "" || e.Model != "" || e.SecretRef != nil || e.MaxConcurrency != 0 || e.AllowInsecureHTTP || e.WorkspacePath != "" {
			errs = append(errs, field.Forbidden(p, "kind Builtin takes no url, model, secretRef, maxConcurrency, allowInsecureHTTP or workspacePath: remove them or set kind OpenAI"))
		}
		return errs
	case SamplerEngineOpenAI:
	default:
		return append(errs, field.NotSupported(p.Child("kind"), e.Kind, []SamplerEngineKind{SamplerEngineBuiltin, SamplerEngineOpenAI}))
	}
	switch {
	case e.URL == "":
		errs = append(errs, field.Required(p.Child("url"), "kind OpenAI needs the server's API base, e.g. http://vllm:8000/v1"))
	case !strings.HasPrefix(e.URL, "http://") && !strings.HasPrefix(e.URL, "https://"):
		errs = append(errs, field.Invalid(p.Child("url"), e.URL, "must start with http:// or https://, e.g. http://vllm:8000/v1"))
	case len(e.URL) > 2048:
		errs = append(errs, field.TooLong(p.Child("url"), "", 2048))
	}
	if e.Model == "" {
		errs = append(errs, field.Required(p.Child("model"), "kind OpenAI needs the name the server serves spec.model under (vLLM's --served-model-name)"))
	} else if len(e.Model) > 256 {
		errs = append(errs, field.TooLong(p.Child("model"), "", 256))
	}
	if e.SecretRef != nil && (e.SecretRef.Name == "" || e.SecretRef.Key == "") {
		errs = append(errs, field.Required(p.Child("secretRef"), "set both name and key of the Secret"))
	}
	if e.SecretRef != nil && strings.HasPrefix(e.URL, "http://") && !e.AllowInsecureHTTP {
		errs = append(errs, field.Invalid(p.Child("url"), e.URL, "a secretRef's token is only sent to an https:// url; set allowInsecureHTTP: true to send it over http:// (an in-cluster service without TLS)"))
	}
	if e.MaxConcurrency != 0 {
		errs = append(errs, validateRange(p.Child("maxConcurrency"), int64(e.MaxConcurrency), 1, 256)...)
	}
	if e.WorkspacePath != "" && !strings.HasPrefix(e.WorkspacePath, "/") {
		errs = append(errs, field.Invalid(p.Child("workspacePath"), e.WorkspacePath, "must be an absolute path (where the server sees the workspace volume), e.g. /workspace"))
	}
	return errs
}

func annotatorOrDefault(a *AnnotatorSpec) AnnotatorSpec {
	if a == nil {
		return AnnotatorSpec{Kind: AnnotatorBuiltin, Name: DefaultAnnotator}
	}
	return *a
}

func validateRange(p *field.Path, v, lo, hi int64) field.ErrorList {
	if v < lo || v > hi {
		return field.ErrorList{field.Invalid(p, v, fmt.Sprintf("must be between %d and %d", lo, hi))}
	}
	return nil
}

func validateParallelism(p *field.Path, v *int32) field.ErrorList {
	if v == nil {
		return nil
	}
	return validateRange(p, int64(*v), 1, MaxParallelism)
}

// validateDecimal checks lo < d <= hi (the lower bound is exclusive, the upper inclusive).
func validateDecimal(p *field.Path, d Decimal, lo, hi float64, example string) field.ErrorList {
	v, err := d.Float64()
	if err != nil {
		return field.ErrorList{field.Invalid(p, string(d), "must be a decimal string such as "+example)}
	}
	if v <= lo || v > hi {
		msg := fmt.Sprintf("must be a decimal greater than %g, e.g. %s", lo, example)
		if !math.IsInf(hi, 1) {
			msg = fmt.Sprintf("must be a decimal with %g < value <= %g, e.g. %s", lo, hi, example)
		}
		return field.ErrorList{field.Invalid(p, string(d), msg)}
	}
	return nil
}

func validateRelPath(p *field.Path, s string) field.ErrorList {
	if strings.HasPrefix(s, "/") {
		return field.ErrorList{field.Invalid(p, s, "must be relative to the workspace root (no leading '/')")}
	}
	for _, seg := range strings.Split(s, "/") {
		if seg == ".." {
			return field.ErrorList{field.Invalid(p, s, "must not contain '..'")}
		}
	}
	return nil
}

func validateStage(p *field.Path, t *StageTemplate) field.ErrorList {
	var errs field.ErrorList
	switch t.ImagePullPolicy {
	case "", "Always", "IfNotPresent", "Never":
	default:
		errs = append(errs, field.NotSupported(p.Child("imagePullPolicy"), t.ImagePullPolicy, []string{"Always", "IfNotPresent", "Never"}))
	}
	if t.ActiveDeadlineSeconds != nil && *t.ActiveDeadlineSeconds < 1 {
		errs = append(errs, field.Invalid(p.Child("activeDeadlineSeconds"), *t.ActiveDeadlineSeconds, "must be at least 1 (or unset for no per-stage deadline)"))
	}
	return errs
}

// countSet is how many of the strings are set.
func countSet(ss ...string) int {
	n := 0
	for _, s := range ss {
		if s != "" {
			n++
		}
	}
	return n
}

var (
	// storeURIRE and modelURIRE mirror the CEL rules on spec.workspace.objectStore.uri and
	// spec.model.uri: a bucket, an optional (model: required) path, no credentials.
	storeURIRE = regexp.MustCompile(`^(s3|gs)://[a-z0-9][-a-z0-9._]*[a-z0-9](/[^?#@]*)?$`)
	modelURIRE = regexp.MustCompile(`^(s3|gs)://[a-z0-9][-a-z0-9._]*[a-z0-9]/[^?#@]+$`)
	// ociRefRE is an image reference behind oci:// (registry[:port]/repository[:tag][@digest]).
	ociRefRE = regexp.MustCompile(`^oci://[a-z0-9][-a-z0-9.]*(:[0-9]+)?(/[a-z0-9][-a-z0-9._]*)+(:[A-Za-z0-9_][-A-Za-z0-9_.]{0,127})?(@sha256:[a-f0-9]{64})?$`)
	regionRE = regexp.MustCompile(`^[a-z0-9-]+$`)
)

// ModelImage is the image reference of an oci:// model uri ("" for any other location).
func ModelImage(uri string) string {
	if ref, ok := strings.CutPrefix(uri, "oci://"); ok {
		return ref
	}
	return ""
}

// IsModelURI reports whether a model location (spec.model.uri, spec.trustRegion.fixedCheckpoint)
// names a bucket rather than a workspace path.
func IsModelURI(s string) bool {
	return strings.HasPrefix(s, "s3://") || strings.HasPrefix(s, "gs://")
}

// validateObjectStore checks spec.workspace.objectStore; the local runner also takes a
// file:///abs/path uri (the same layout in a folder).
func validateObjectStore(p *field.Path, o *WorkspaceObjectStore, local bool) field.ErrorList {
	return validateStore(p, o.URI, o.Endpoint, o.Region, o.SecretRef, local)
}

// validateStore checks the fields of a bucket location (spec.workspace.objectStore,
// spec.output) under p.
func validateStore(p *field.Path, uri, endpoint, region string, ref *ObjectStoreSecretRef, local bool) field.ErrorList {
	var errs field.ErrorList
	switch {
	case local && strings.HasPrefix(uri, "file:///"):
	case !storeURIRE.MatchString(uri):
		// The uri is not echoed: a mistaken one may hold credentials (s3://key:secret@bucket).
		errs = append(errs, field.Invalid(p.Child("uri"), "[not shown]", "must be s3://bucket[/prefix] or gs://bucket[/prefix], without credentials, query or fragment"))
	}
	if endpoint != "" && !strings.HasPrefix(endpoint, "http://") && !strings.HasPrefix(endpoint, "https://") {
		errs = append(errs, field.Invalid(p.Child("endpoint"), endpoint, "must start with http:// or https://"))
	}
	if region != "" && !regionRE.MatchString(region) {
		errs = append(errs, field.Invalid(p.Child("region"), region, "must be a region name such as eu-west-1"))
	}
	if r := ref; r != nil {
		if r.Name == "" {
			errs = append(errs, field.Required(p.Child("secretRef", "name"), "name the Secret that holds the access key pair"))
		}
		if !strings.HasPrefix(uri, "s3://") {
			errs = append(errs, field.Forbidden(p.Child("secretRef"), "is for s3:// buckets: gs:// uses the pod's workload identity (Application Default Credentials)"))
		}
	}
	return errs
}

// hasStageCommand reports whether any stage replaces the bpo stage command.
func (s *AlignmentRunSpec) hasStageCommand() bool {
	return len(s.Sampler.Command) > 0 || len(s.Labeler.Command) > 0 || len(s.Trainer.Command) > 0 || len(s.Evaluator.Command) > 0
}

// Keys are the Secret's keys of the access key id and the secret access key, defaulted.
func (r *ObjectStoreSecretRef) Keys() (accessKeyID, secretAccessKey string) {
	accessKeyID, secretAccessKey = r.AccessKeyIDKey, r.SecretAccessKeyKey
	if accessKeyID == "" {
		accessKeyID = EnvAWSAccessKeyID
	}
	if secretAccessKey == "" {
		secretAccessKey = EnvAWSSecretAccessKey
	}
	return accessKeyID, secretAccessKey
}

// The environment variables that carry an object store's credentials into a stage pod (the
// AWS SDK's standard names, which the local runner reads too).
const (
	EnvAWSAccessKeyID     = "AWS_ACCESS_KEY_ID"
	EnvAWSSecretAccessKey = "AWS_SECRET_ACCESS_KEY"
)
