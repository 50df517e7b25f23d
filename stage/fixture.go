package stage

import (
	"fmt"
	"os"
	"path/filepath"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/pipeline"
)

// Fixture is a workspace prepared by running our own stages up to (not including) the stage
// under test, and the run.yaml that describes it.
type Fixture struct {
	Stage  string
	Phase  int
	Shards int // completions of the stage's Job: shards (sample, label), members (train), 1 (eval)
	Run    *v1alpha1.AlignmentRun
	Dir    string // scratch folder of the fixture
	Volume string // the workspace volume (what /workspace is in a pod)
	Config string // run.yaml (what /etc/bpo/run.yaml is in a pod)
}

// FixtureRun is the tiny run of the fixtures: the built-in tiny-reviews model and reviews task,
// 2 phases of 4 pairs, 2 ensemble members, `shards` sample and label shards.
func FixtureRun(shards int32) *v1alpha1.AlignmentRun {
	ar := &v1alpha1.AlignmentRun{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "AlignmentRun"},
		ObjectMeta: metav1.ObjectMeta{Name: "conformance", Namespace: "default", UID: "00000000-0000-4000-8000-00000000c0de"},
	}
	s := &ar.Spec
	s.Model.Builtin = "tiny-reviews"
	s.Data.Builtin = "reviews"
	s.Budget.Pairs, s.Budget.PairsPerStep, s.Budget.EvalPrompts = 8, 2, 3
	s.TrustRegion.Phases = 2
	s.Ensemble.Members = 2
	s.Sampler.MaxNewTokens = 6
	s.Sampler.Parallelism, s.Labeler.Parallelism = &shards, &shards
	s.Workspace.Path = "."
	ar.SetDefaults()
	return ar
}

// completions is the number of pods of a stage's Job (controllers.stageTemplate).
func completions(ar *v1alpha1.AlignmentRun, stage string) int {
	switch stage {
	case v1alpha1.StageSample:
		return int(*ar.Spec.Sampler.Parallelism)
	case v1alpha1.StageLabel:
		return int(*ar.Spec.Labeler.Parallelism)
	case v1alpha1.StageTrain:
		return int(ar.Spec.Ensemble.Members)
	}
	return 1
}

// stageOrder is the order of the stages within a phase.
var stageOrder = []string{v1alpha1.StageSample, v1alpha1.StageLabel, v1alpha1.StageTrain, v1alpha1.StageEval}

// Prepare makes a fixture in dir for `stage` of phase k: every stage of the phases before k and
// the stages of phase k before `stage` are run with our own pipeline (eval of phase 0 needs
// nothing).
func Prepare(dir, stage string, k int, ar *v1alpha1.AlignmentRun) (*Fixture, error) {
	pos := -1
	for i, s := range stageOrder {
		if s == stage {
			pos = i
		}
	}
	if pos < 0 {
		return nil, fmt.Errorf("unknown stage %q: want sample, label, train or eval", stage)
	}
	if errs := ar.ValidateLocal(); len(errs) > 0 {
		return nil, errs.ToAggregate()
	}
	if k < 0 || (k == 0 && stage != v1alpha1.StageEval) || k > int(ar.Spec.TrustRegion.Phases) {
		return nil, fmt.Errorf("--phase %d: want 1..%d (eval also takes 0)", k, ar.Spec.TrustRegion.Phases)
	}
	f := &Fixture{Stage: stage, Phase: k, Shards: completions(ar, stage), Run: ar, Dir: dir,
		Volume: filepath.Join(dir, "workspace"), Config: filepath.Join(dir, "etc", "bpo", "run.yaml")}
	doc, err := yaml.Marshal(map[string]any{
		"apiVersion": ar.APIVersion, "kind": ar.Kind,
		"metadata": map[string]any{"name": ar.Name, "namespace": ar.Namespace, "uid": ar.UID},
		"spec":     ar.Spec,
	})
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(f.Config), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(f.Config, doc, 0o644); err != nil {
		return nil, err
	}
	// Through the same loader the stage uses, so the fixture runs exactly what the file says.
	loaded, err := pipeline.LoadRunFile(f.Config)
	if err != nil {
		return nil, err
	}
	run, err := pipeline.NewRun(loaded)
	if err != nil {
		return nil, err
	}
	env, err := pipeline.NewEnv(run, f.Volume)
	if err != nil {
		return nil, err
	}
	for p := 1; p <= k; p++ {
		last := len(stageOrder) - 1 // eval is not needed by a later stage
		if p == k {
			last = pos
		}
		for _, s := range stageOrder[:last] {
			if s == v1alpha1.StageEval {
				continue
			}
			n := completions(ar, s)
			for i := range n {
				var err error
				switch s {
				case v1alpha1.StageSample:
					_, err = env.Sample(p, i, n)
				case v1alpha1.StageLabel:
					_, err = env.Label(p, i, n)
				case v1alpha1.StageTrain:
					_, err = env.Train(p, i)
				}
				if err != nil {
					return nil, fmt.Errorf("fixture: our own %s stage of phase %d: %w", s, p, err)
				}
			}
		}
	}
	return f, nil
}
