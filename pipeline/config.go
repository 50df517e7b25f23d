package pipeline

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/stage/contract"
	"github.com/bpo-dev/bpo/trainer/loss"
)

// Run is an AlignmentRun with its decimal fields parsed: what every stage needs.
type Run struct {
	Name string
	UID  string
	Spec v1alpha1.AlignmentRunSpec

	Loss        loss.Kind
	Beta        float64
	LengthAlpha float64 // R-DPO's length term (spec.loss.lengthAlpha; 0: none)
	EMAAlpha    float64
	LR          float64
	MaxGradNorm float64
	Temperature float64
	TopP        float64
	Seed        uint64
}

// LoadRunFile reads an AlignmentRun manifest (the same YAML `kubectl apply` takes),
// applies the schema defaults and validates it. Unknown or misspelt fields are
// errors that name the field, as the API server's strict field validation would.
func LoadRunFile(path string) (*v1alpha1.AlignmentRun, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	ar, err := DecodeRun(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ar, nil
}

// DecodeRun parses, defaults and validates an AlignmentRun manifest.
func DecodeRun(data []byte) (*v1alpha1.AlignmentRun, error) {
	docs := splitYAMLDocuments(data)
	if len(docs) != 1 {
		return nil, fmt.Errorf("want exactly one YAML document holding an AlignmentRun, found %d", len(docs))
	}
	var ar v1alpha1.AlignmentRun
	if err := yaml.UnmarshalStrict(docs[0], &ar); err != nil {
		return nil, fmt.Errorf("not a valid AlignmentRun: %v", err)
	}
	if ar.Kind != "" && ar.Kind != "AlignmentRun" {
		return nil, fmt.Errorf("kind is %q, want AlignmentRun", ar.Kind)
	}
	if ar.APIVersion != "" && ar.APIVersion != v1alpha1.GroupVersion.String() {
		return nil, fmt.Errorf("apiVersion is %q, want %s", ar.APIVersion, v1alpha1.GroupVersion)
	}
	ar.SetDefaults()
	zeros := keepExplicitZeros(docs[0], &ar)
	if errs := ar.ValidateLocal(); len(errs) > 0 {
		for _, e := range errs {
			if d, ok := zeros[e.Field]; ok {
				e.Detail += fmt.Sprintf("; 0 does not mean the default: remove the field for the default (%d)", d)
			}
		}
		return nil, errs.ToAggregate()
	}
	return &ar, nil
}

// keepExplicitZeros undoes SetDefaults for the integer fields the document sets to 0, and
// returns their paths with their defaults. Go cannot tell such a field from an absent one, so
// SetDefaults would give it the default; the API server can, and rejects the 0 (each of these
// fields has a minimum of 1 or more), so the local runner must reject it too.
func keepExplicitZeros(doc []byte, ar *v1alpha1.AlignmentRun) map[string]int32 {
	// A probe decoded over a sentinel: a field the document leaves out keeps it.
	var probe v1alpha1.AlignmentRun
	seen := probe.Spec.DefaultedInts()
	for _, f := range seen {
		*f.Value = -1
	}
	if yaml.Unmarshal(doc, &probe) != nil {
		return nil // the strict decode accepted it; cannot happen
	}
	zeros := map[string]int32{}
	for i, f := range ar.Spec.DefaultedInts() {
		if *seen[i].Value == 0 {
			*f.Value = 0
			zeros[f.Path.String()] = f.Default
		}
	}
	return zeros
}

func splitYAMLDocuments(data []byte) [][]byte {
	var docs [][]byte
	for _, d := range bytes.Split(append([]byte("\n"), data...), []byte("\n---")) {
		if len(bytes.TrimSpace(stripComments(d))) > 0 {
			docs = append(docs, d)
		}
	}
	return docs
}

func stripComments(d []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(d, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			out = append(out, line...)
			out = append(out, '\n')
		}
	}
	return out
}

// NewRun parses the decimal fields of a defaulted, validated AlignmentRun.
func NewRun(ar *v1alpha1.AlignmentRun) (*Run, error) {
	s := ar.Spec
	r := &Run{Name: ar.Name, UID: string(ar.UID), Spec: s, Seed: runSeed(&s)}
	var errs []error
	parse := func(field string, d v1alpha1.Decimal, dst *float64) {
		v, err := d.Float64()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %v", field, err))
		}
		*dst = v
	}
	k, err := loss.ParseKind(string(s.Loss.Type))
	if err != nil {
		errs = append(errs, fmt.Errorf("spec.loss.type: %v", err))
	}
	r.Loss = k
	parse("spec.loss.beta", s.Loss.Beta, &r.Beta)
	if s.Loss.LengthAlpha != "" {
		parse("spec.loss.lengthAlpha", s.Loss.LengthAlpha, &r.LengthAlpha)
	}
	parse("spec.trainer.learningRate", s.Trainer.LearningRate, &r.LR)
	parse("spec.trainer.maxGradNorm", s.Trainer.MaxGradNorm, &r.MaxGradNorm)
	parse("spec.sampler.temperature", s.Sampler.Temperature, &r.Temperature)
	if s.Sampler.TopP != nil {
		parse("spec.sampler.topP", *s.Sampler.TopP, &r.TopP)
	}
	if s.TrustRegion.EMAAlpha != nil {
		parse("spec.trustRegion.emaAlpha", *s.TrustRegion.EMAAlpha, &r.EMAAlpha)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return r, nil
}

// Phases is F.
func (r *Run) Phases() int { return int(r.Spec.TrustRegion.Phases) }

// Members is the ensemble size N.
func (r *Run) Members() int { return int(r.Spec.Ensemble.Members) }

// PairsPerPhase is the annotation budget of one phase (prompts labelled per phase).
func (r *Run) PairsPerPhase() int { return int(r.Spec.Budget.Pairs / r.Spec.TrustRegion.Phases) }

// SampleShards and LabelShards are the sampler's and labeler's parallelism.
func (r *Run) SampleShards() int { return int(contract.Completions(&r.Spec, v1alpha1.StageSample)) }

// LabelShards is the labeler's parallelism.
func (r *Run) LabelShards() int { return int(contract.Completions(&r.Spec, v1alpha1.StageLabel)) }

func deref[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// Owner is the workspace owner record of the run.
func (r *Run) Owner() Owner { return Owner{Name: r.Name, UID: r.UID} }

// Describe is a one-line summary for logs and reports.
func (r *Run) Describe() string {
	s := r.Spec
	ref := string(s.TrustRegion.Reference)
	if ref == string(v1alpha1.ReferenceEMA) {
		ref += fmt.Sprintf("(alpha=%g)", r.EMAAlpha)
	}
	lossDesc := fmt.Sprintf("%s beta=%g", r.Loss, r.Beta)
	if r.LengthAlpha != 0 {
		lossDesc += fmt.Sprintf(" lengthAlpha=%g", r.LengthAlpha)
	}
	return strings.Join([]string{
		lossDesc,
		fmt.Sprintf("reference=%s", ref),
		fmt.Sprintf("phases=%d", s.TrustRegion.Phases),
		fmt.Sprintf("pairs=%d", s.Budget.Pairs),
		fmt.Sprintf("members=%d", s.Ensemble.Members),
		fmt.Sprintf("lr=%g", r.LR),
	}, " ")
}
