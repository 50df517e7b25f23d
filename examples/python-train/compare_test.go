package pythontrain_test

import (
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/pipeline"
	"github.com/bpo-dev/bpo/stage"
	"github.com/bpo-dev/bpo/trainer/model"
)

// Tolerances of the comparison with the Go trainer. Both engines compute the forward and backward
// passes in float32 and keep float64 master weights and AdamW moments, and they take the same
// steps over the same batches (gorand.py draws Go's order), so they differ only by float32
// rounding in different summation orders: ~1e-6 relative on a log-prob sum, which Adam's
// normalised updates carry into the adapters at about the same relative size. Measured on these
// runs (DPO, IPO, SLiC; 2 phases): losses within 2e-7, adapter log-probs within 6e-6 nats, while
// training moved those log-probs by 3.5-15 nats. The bounds below are ~20-50x the measured
// differences, room for another BLAS's summation order, and far below what a wrong formula, batch
// order, learning rate or clipping produces (those move the loss by 1e-3 or more).
const (
	tolMetric = 1e-5 // loss, rewardMargin, klToReference: absolute, or relative above 1
	tolLogp   = 1e-4 // the trained adapter's response log-prob sums (nats; sums of ~10-30 tokens)
)

// tinyRun is the conformance fixture's run (tiny-reviews, reviews, 8 pairs in 2 phases, 2 members,
// 2 pairs per step) with a learning rate high enough that training visibly moves the adapters.
func tinyRun(kind v1alpha1.LossType) *v1alpha1.AlignmentRun {
	ar := stage.FixtureRun(1)
	ar.Spec.Loss.Type = kind
	ar.Spec.Trainer.LearningRate = "5e-3"
	return ar
}

func openEnv(t *testing.T, ar *v1alpha1.AlignmentRun, volume string) *pipeline.Env {
	t.Helper()
	run, err := pipeline.NewRun(ar)
	if err != nil {
		t.Fatal(err)
	}
	env, err := pipeline.NewEnv(run, volume)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// TestLossesAgainstGo trains phase 1's members with each loss on the same fixture (sampled and
// labelled by bpo) with the Go trainer and with the Python stage, through Env.TrainCommand.
func TestLossesAgainstGo(t *testing.T) {
	command := stageCommand(t)
	for _, kind := range []v1alpha1.LossType{v1alpha1.LossDPO, v1alpha1.LossIPO, v1alpha1.LossSLiC} {
		t.Run(string(kind), func(t *testing.T) {
			ar := tinyRun(kind)
			f, err := stage.Prepare(t.TempDir(), v1alpha1.StageTrain, 1, ar)
			if err != nil {
				t.Fatal(err)
			}
			volGo, volPy := filepath.Join(f.Dir, "go"), filepath.Join(f.Dir, "py")
			for _, v := range []string{volGo, volPy} {
				if err := os.CopyFS(v, os.DirFS(f.Volume)); err != nil {
					t.Fatal(err)
				}
			}
			goEnv, pyEnv := openEnv(t, ar, volGo), openEnv(t, ar, volPy)
			pyEnv.TrainCommand = command
			for m := range int(ar.Spec.Ensemble.Members) {
				for _, e := range []*pipeline.Env{goEnv, pyEnv} {
					if _, err := e.Train(1, m); err != nil {
						t.Fatal(err)
					}
				}
			}
			compare(t, goEnv, pyEnv, 1)
		})
	}
}

// TestWholeRun runs the whole tiny run locally twice, once with the Go train stage and once with
// the Python one (Env.TrainCommand, what `bpo run` sets from spec.trainer.command), and compares
// every phase's members.
func TestWholeRun(t *testing.T) {
	command := stageCommand(t)
	ar := tinyRun(v1alpha1.LossDPO)
	goEnv, pyEnv := openEnv(t, ar, t.TempDir()), openEnv(t, ar, t.TempDir())
	pyEnv.TrainCommand = command
	goSums, err := goEnv.RunAll(pipeline.RunHooks{})
	if err != nil {
		t.Fatal(err)
	}
	pySums, err := pyEnv.RunAll(pipeline.RunHooks{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Go trainer:\n%s", pipeline.FormatTable(goSums))
	t.Logf("Python trainer:\n%s", pipeline.FormatTable(pySums))
	for k := 1; k <= int(ar.Spec.TrustRegion.Phases); k++ {
		compare(t, goEnv, pyEnv, k)
	}
	if _, err := pyEnv.WriteReport(pySums); err != nil {
		t.Fatalf("the report of the run trained in Python: %v", err)
	}
}

// compare checks phase k's members of the two runs: same pairs (so same inputs), the markers'
// numbers, and the trained adapters' response log-probs on the phase's pairs.
func compare(t *testing.T, goEnv, pyEnv *pipeline.Env, k int) {
	t.Helper()
	goPairs, err := goEnv.PhasePairs(k)
	if err != nil {
		t.Fatal(err)
	}
	pyPairs, err := pyEnv.PhasePairs(k)
	if err != nil {
		t.Fatal(err)
	}
	if len(goPairs) != len(pyPairs) {
		t.Fatalf("phase %d: %d pairs vs %d: the runs diverged before training", k, len(goPairs), len(pyPairs))
	}
	for i := range goPairs {
		if goPairs[i].Chosen != pyPairs[i].Chosen || goPairs[i].Rejected != pyPairs[i].Rejected {
			t.Fatalf("phase %d pair %d differs between the runs: the inputs of training are not the same", k, i)
		}
	}
	base, err := goEnv.LoadBase()
	if err != nil {
		t.Fatal(err)
	}
	goMembers, err := goEnv.Members(k)
	if err != nil {
		t.Fatal(err)
	}
	pyMembers, err := pyEnv.Members(k)
	if err != nil {
		t.Fatal(err)
	}
	init, err := goEnv.Members(k - 1)
	if err != nil {
		t.Fatal(err)
	}
	for m := range goMembers {
		g, _ := goEnv.Done(k, v1alpha1.StageTrain, m)
		p, _ := pyEnv.Done(k, v1alpha1.StageTrain, m)
		if g.Pairs != p.Pairs || g.Steps != p.Steps || g.Checkpoint != p.Checkpoint {
			t.Errorf("phase %d member %d: pairs/steps/checkpoint Go %d/%d/%s, Python %d/%d/%s", k, m, g.Pairs, g.Steps, g.Checkpoint, p.Pairs, p.Steps, p.Checkpoint)
		}
		for _, c := range []struct {
			name   string
			go_, p *float64
			tol    float64
		}{
			{"loss", g.Loss, p.Loss, tolMetric}, {"rewardMargin", g.RewardMargin, p.RewardMargin, tolMetric},
			{"klToReference", g.KLToReference, p.KLToReference, tolMetric}, {"rewardAccuracy", g.RewardAccuracy, p.RewardAccuracy, 0},
			{"freshPairAccuracy", g.FreshPairAccuracy, p.FreshPairAccuracy, 0}, {"prevTrainPairAccuracy", g.PrevTrainPairAccuracy, p.PrevTrainPairAccuracy, 0},
			{"freshLengthBalanced", g.FreshLengthBalanced, p.FreshLengthBalanced, 0},
		} {
			if (c.go_ == nil) != (c.p == nil) {
				t.Errorf("phase %d member %d: %s Go %v, Python %v (one is missing)", k, m, c.name, c.go_, c.p)
				continue
			}
			if c.go_ != nil && !(math.Abs(*c.go_-*c.p) <= c.tol*math.Max(1, math.Abs(*c.go_))) {
				t.Errorf("phase %d member %d: %s Go %.9g, Python %.9g (tolerance %g)", k, m, c.name, *c.go_, *c.p, c.tol)
			}
		}
		goLp, pyLp, initLp := logps(t, base, goMembers[m], goPairs), logps(t, base, pyMembers[m], goPairs), logps(t, base, init[m], goPairs)
		var diff, moved float64
		for i := range goLp {
			diff = math.Max(diff, math.Abs(goLp[i]-pyLp[i]))
			moved = math.Max(moved, math.Abs(goLp[i]-initLp[i]))
		}
		t.Logf("phase %d member %d: loss Go %.9g Python %.9g; adapter log-probs max |Go-Python| %.3g nats, training moved them %.3g",
			k, m, *g.Loss, *p.Loss, diff, moved)
		if diff > tolLogp {
			t.Errorf("phase %d member %d: the trained adapters' log-probs differ by %.3g nats (tolerance %g)", k, m, diff, tolLogp)
		}
		if moved < 100*tolLogp {
			t.Errorf("phase %d member %d: training moved the log-probs by only %.3g: the comparison would not see a difference", k, m, moved)
		}
	}
}

// logps are the response log-prob sums of the pairs' chosen then rejected responses under base + a.
func logps(t *testing.T, base *pipeline.Base, a *model.Adapter, pairs []pipeline.Pair) []float64 {
	t.Helper()
	var prompts, responses [][]int
	for _, side := range []func(pipeline.Pair) []int{func(p pipeline.Pair) []int { return p.ChosenIDs }, func(p pipeline.Pair) []int { return p.RejectedIDs }} {
		for _, p := range pairs {
			prompts, responses = append(prompts, p.PromptIDs), append(responses, side(p))
		}
	}
	lp, _, err := model.NewInference(model.MergeMean(base.Weights, []*model.Adapter{a})).SequenceLogProbs(prompts, responses)
	if err != nil {
		t.Fatal(err)
	}
	return lp
}
