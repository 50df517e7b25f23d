package pipeline

import (
	"errors"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/google/go-cmp/cmp"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/trainer/model"
)

// letterScorer prefers responses with more 'e's: cheap, deterministic, rarely tied.
type letterScorer struct{}

func (letterScorer) Name() string { return "letters" }
func (letterScorer) Score(_, r string) float64 {
	return float64(strings.Count(r, "e")) - 0.01*float64(len(r))
}

type constScorer struct{}

func (constScorer) Name() string              { return "const" }
func (constScorer) Score(_, _ string) float64 { return 0 }

// runBuilder builds small AlignmentRuns for tests.
type runBuilder struct{ ar v1alpha1.AlignmentRun }

func makeRun(name string) *runBuilder {
	b := &runBuilder{}
	b.ar.Name, b.ar.UID = name, types.UID("uid-"+metav1UID(name))
	s := &b.ar.Spec
	s.Model.Path = "models/tiny"
	s.Data.Builtin = "reviews"
	s.Budget.Pairs, s.Budget.PairsPerStep, s.Budget.EvalPrompts = 16, 4, 6
	s.TrustRegion.Phases = 2
	s.Ensemble.Members, s.Ensemble.Rank, s.Ensemble.Alpha = 2, 2, 4
	s.Sampler.MaxNewTokens = 6
	s.Trainer.LearningRate = "0.01"
	s.Workspace.Path = "."
	return b
}

func metav1UID(s string) string { return strings.ReplaceAll(s, "-", "") }

func (b *runBuilder) Reference(r v1alpha1.ReferenceType) *runBuilder {
	b.ar.Spec.TrustRegion.Reference = r
	if r == v1alpha1.ReferenceEMA {
		a := v1alpha1.Decimal("0.5")
		b.ar.Spec.TrustRegion.EMAAlpha = &a
	}
	return b
}
func (b *runBuilder) Shards(sample, label int32) *runBuilder {
	b.ar.Spec.Sampler.Parallelism, b.ar.Spec.Labeler.Parallelism = &sample, &label
	return b
}
func (b *runBuilder) Loss(t v1alpha1.LossType) *runBuilder { b.ar.Spec.Loss.Type = t; return b }

func (b *runBuilder) Env(t *testing.T, volume string) *Env {
	t.Helper()
	ar := b.ar.DeepCopy()
	ar.SetDefaults()
	if errs := ar.ValidateLocal(); len(errs) > 0 {
		t.Fatalf("invalid test run: %v", errs.ToAggregate())
	}
	run, err := NewRun(ar)
	if err != nil {
		t.Fatal(err)
	}
	e, err := NewEnv(run, volume)
	if err != nil {
		t.Fatal(err)
	}
	e.Scorer = letterScorer{}
	return e
}

var _ = metav1.Now

// newVolume makes a workspace volume holding a tiny random model with two SFT adapters
// that differ (nonzero B), so the ensemble's members are distinct.
func newVolume(t *testing.T) string {
	t.Helper()
	vol := t.TempDir()
	cfg := model.Config{ModelType: "gpt2", VocabSize: 257, NPositions: 64, NEmbd: 16, NLayer: 1, NHead: 2,
		LayerNormEpsilon: 1e-5, ActivationFunction: "gelu_new", BOSTokenID: 256, EOSTokenID: 256}
	dir := filepath.Join(vol, "models", "tiny")
	if err := model.SaveWeights(dir, model.Init(cfg, 7)); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	if err := os.MkdirAll(filepath.Join(dir, "adapters"), 0o755); err != nil {
		t.Fatal(err)
	}
	for m := range 2 {
		a := model.NewAdapter(cfg, 2, 4, int64(m+1))
		// In name order: the fixture must be the same model every time (map order is random).
		for _, name := range slices.Sorted(maps.Keys(a.Tensors)) {
			if ten := a.Tensors[name]; strings.HasSuffix(name, "lora_B") {
				for i := range ten.Data {
					ten.Data[i] = 0.05 * rng.NormFloat64()
				}
			}
		}
		if err := model.SaveAdapter(AdapterFile(dir, m), a); err != nil {
			t.Fatal(err)
		}
	}
	return vol
}

func TestRunAllTwoPhases(t *testing.T) {
	vol := newVolume(t)
	e := makeRun("tiny").Env(t, vol)
	sums, err := e.RunAll(RunHooks{})
	if err != nil {
		t.Fatal(err)
	}
	if len(sums) != 2 || !sums[1].Evaluated || sums[0].Evaluated {
		t.Fatalf("want 2 phases, eval after the last only: %+v", sums)
	}
	for _, s := range sums {
		if s.Samples != 16 || s.Pairs+s.Ties+s.Identical != 8 {
			t.Fatalf("phase %d: counts do not add up to the budget: %+v", s.Phase, s)
		}
	}
	pairs, err := e.PhasePairs(2)
	if err != nil || len(pairs) == 0 {
		t.Fatalf("phase 2 pairs: %v %v", len(pairs), err)
	}
	for _, p := range pairs {
		if p.Phase != 2 || letterScorer.Score(letterScorer{}, "", p.Chosen) <= letterScorer.Score(letterScorer{}, "", p.Rejected) {
			t.Fatalf("pair not ordered by the annotator: %+v", p)
		}
	}
	// The phase-2 behavior snapshot is the exact merge of the members after phase 1.
	snap, err := model.LoadWeights(e.WS.BehaviorDir(2))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := e.Policy(1)
	for name, ten := range want.Tensors {
		for i, v := range ten.Data {
			if d := snap.Tensors[name].Data[i] - v; d > 1e-6 || d < -1e-6 {
				t.Fatalf("behavior snapshot %s[%d] = %g, merge = %g", name, i, snap.Tensors[name].Data[i], v)
			}
		}
	}
	if _, err := e.LoadEval(0); err != nil {
		t.Fatalf("baseline evaluation missing: %v", err)
	}
	ev, err := e.LoadEval(2)
	if err != nil || ev.Prompts != 6 || len(ev.PerPrompt) != 6 {
		t.Fatalf("final evaluation: %+v %v", ev, err)
	}
	// Training moved the members away from their initial adapters.
	init, _ := e.Members(0)
	after, _ := e.Members(2)
	if reflect.DeepEqual(init[0].Tensors, after[0].Tensors) {
		t.Fatal("member 0 did not change during training")
	}
}

func TestStagesAreIdempotent(t *testing.T) {
	vol := newVolume(t)
	e := makeRun("idem").Env(t, vol)
	first, err := e.Sample(1, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	path := e.WS.SamplesPath(1, 0)
	st1, _ := os.Stat(path)
	again, err := e.Sample(1, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	st2, _ := os.Stat(path)
	if !reflect.DeepEqual(first, again) || !st1.ModTime().Equal(st2.ModTime()) {
		t.Fatalf("second run of a finished stage was not a no-op: %+v vs %+v", first, again)
	}
}

func TestShardedSamplingEqualsUnsharded(t *testing.T) {
	vol := newVolume(t)
	one := makeRun("one").Env(t, vol)
	three := makeRun("three").Shards(3, 2).Env(t, vol)
	if _, err := one.Sample(1, 0, 1); err != nil {
		t.Fatal(err)
	}
	for s := range 3 {
		if _, err := three.Sample(1, s, 3); err != nil {
			t.Fatal(err)
		}
	}
	a, err := one.phaseSamples(1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := three.phaseSamples(1)
	if err != nil {
		t.Fatal(err)
	}
	// The same prompts draw the same responses. The log-probs agree to float32 rounding, not to the
	// bit: a shard batches other rows together, and OpenBLAS's float32 kernels round a row
	// differently depending on its position in the call (docs/design.md, Numerics).
	stripped := func(rows []SampleRow) ([]SampleRow, []float64) {
		var lps []float64
		out := make([]SampleRow, len(rows))
		for i, r := range rows {
			lps = append(append(lps, r.BehaviorLogps...), r.ReferenceLogps...)
			r.BehaviorLogps, r.ReferenceLogps = nil, nil
			out[i] = r
		}
		return out, lps
	}
	sa, la := stripped(a)
	sb, lb := stripped(b)
	if !reflect.DeepEqual(sa, sb) {
		t.Fatal("3 sample shards did not reproduce the unsharded samples")
	}
	closeLogps(t, "sample log-probs", la, lb)
	// Labels: 2 label shards over 3 sample shards give the same pairs too.
	if _, err := one.Label(1, 0, 1); err != nil {
		t.Fatal(err)
	}
	for s := range 2 {
		if _, err := three.Label(1, s, 2); err != nil {
			t.Fatal(err)
		}
	}
	pa, _ := one.PhasePairs(1)
	pb, _ := three.PhasePairs(1)
	var lpa, lpb []float64
	for i := range pa {
		lpa = append(append(lpa, pa[i].BehaviorLogps[:]...), pa[i].ReferenceLogps[:]...)
		pa[i].BehaviorLogps, pa[i].ReferenceLogps = [2]float64{}, [2]float64{}
	}
	for i := range pb {
		lpb = append(append(lpb, pb[i].BehaviorLogps[:]...), pb[i].ReferenceLogps[:]...)
		pb[i].BehaviorLogps, pb[i].ReferenceLogps = [2]float64{}, [2]float64{}
	}
	if !reflect.DeepEqual(pa, pb) {
		t.Fatal("sharded labelling differs from unsharded")
	}
	closeLogps(t, "pair log-probs", lpa, lpb)
}

// closeLogps checks log-prob sums agree to float32 rounding (1e-5 relative).
func closeLogps(t *testing.T, what string, a, b []float64) {
	t.Helper()
	if len(a) != len(b) || len(a) == 0 {
		t.Fatalf("%s: %d vs %d values", what, len(a), len(b))
	}
	for i := range a {
		if math.Abs(a[i]-b[i]) > 1e-5*math.Max(1, math.Abs(b[i])) {
			t.Fatalf("%s: value %d is %.9g sharded, %.9g unsharded", what, i, b[i], a[i])
		}
	}
}

func TestTiesAreDroppedAndCounted(t *testing.T) {
	vol := newVolume(t)
	e := makeRun("ties").Env(t, vol)
	e.Scorer = constScorer{}
	s, err := e.Sample(1, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	l, err := e.Label(1, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	if l.Pairs != 0 || l.Ties != s.Pairs || l.Identical != s.Identical {
		t.Fatalf("with a constant annotator every distinct pair is a tie: sample %+v label %+v", s, l)
	}
	tr, err := e.Train(1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if tr.Steps != 0 || !strings.Contains(tr.Message, "no pairs") {
		t.Fatalf("training on no pairs: %+v", tr)
	}
}

// errKilled stands for the process dying in the middle of a stage.
var errKilled = errors.New("killed")

func TestResumeAfterKillMidStage(t *testing.T) {
	vol := newVolume(t)
	ref := makeRun("straight").Env(t, vol)
	if _, err := ref.RunAll(RunHooks{}); err != nil {
		t.Fatal(err)
	}

	e := makeRun("killed").Env(t, vol)
	e.Progress = func(u ProgressUpdate) {
		if u.Stage == "train/1" && u.Done == u.Total/2 {
			panic(errKilled)
		}
	}
	func() {
		defer func() {
			if r := recover(); r != errKilled {
				t.Fatalf("expected the simulated kill, got %v", r)
			}
		}()
		e.RunAll(RunHooks{})
	}()
	if _, done := e.Done(1, "train", 1); done {
		t.Fatal("a killed stage must not be marked done")
	}
	if _, done := e.Done(1, "train", 0); !done {
		t.Fatal("member 0 finished before the kill and must stay done")
	}
	// Resume in a fresh process (a new Env): finished stages keep their markers untouched.
	markers := map[string]os.FileInfo{}
	for _, p := range []string{e.WS.DonePath(0, "eval", -1), e.WS.DonePath(1, "sample", 0), e.WS.DonePath(1, "label", 0), e.WS.DonePath(1, "train", 0)} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		markers[p] = st
	}
	again := makeRun("killed").Env(t, vol)
	var redone []string
	again.Progress = func(u ProgressUpdate) {
		if u.Done == 1 {
			redone = append(redone, u.Stage)
		}
	}
	if _, err := again.RunAll(RunHooks{}); err != nil {
		t.Fatal(err)
	}
	if len(redone) == 0 || redone[0] != "train/1" {
		t.Fatalf("resume should restart at phase 1 train/1, redid %v", redone)
	}
	for p, before := range markers {
		after, err := os.Stat(p)
		if err != nil || !after.ModTime().Equal(before.ModTime()) {
			t.Fatalf("finished stage %s was redone", p)
		}
	}
	got, _ := again.Members(2)
	want, _ := ref.Members(2)
	for m := range got {
		if !reflect.DeepEqual(got[m].Tensors, want[m].Tensors) {
			t.Fatalf("member %d after resume differs from an uninterrupted run", m)
		}
	}
}

func TestReferenceSchedules(t *testing.T) {
	vol := newVolume(t)
	for _, ref := range []v1alpha1.ReferenceType{v1alpha1.ReferenceInitial, v1alpha1.ReferenceEMA} {
		t.Run(string(ref), func(t *testing.T) {
			e := makeRun("ref-"+strings.ToLower(string(ref))).Reference(ref).Env(t, vol)
			if _, err := e.RunAll(RunHooks{}); err != nil {
				t.Fatal(err)
			}
			rows, _ := e.phaseSamples(2)
			behavior, _ := e.Policy(1)
			var want *model.Weights
			if ref == v1alpha1.ReferenceInitial {
				want, _ = e.Policy(0)
			} else {
				want = model.ApplyEMA(mustPolicy(t, e, 0), behavior, 0.5)
			}
			wantLp, _, err := model.NewInference(want).SequenceLogProbs([][]int{rows[0].PromptIDs}, [][]int{rows[0].ResponseIDs[0]})
			if err != nil {
				t.Fatal(err)
			}
			if d := wantLp[0] - rows[0].ReferenceLogps[0]; d > 1e-4 || d < -1e-4 {
				t.Fatalf("reference log-prob %g, want %g", rows[0].ReferenceLogps[0], wantLp[0])
			}
			if rows[0].ReferenceLogps[0] == rows[0].BehaviorLogps[0] {
				t.Fatal("phase-2 reference equals the behavior model; the schedule was ignored")
			}
		})
	}
}

func mustPolicy(t *testing.T, e *Env, k int) *model.Weights {
	w, err := e.Policy(k)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestBadInput(t *testing.T) {
	cases := map[string]struct {
		yaml string
		want string
	}{
		"unknown field": {`apiVersion: alignment.bpo.dev/v1alpha1
kind: AlignmentRun
metadata: {name: x}
spec:
  model: {builtin: tiny-reviews}
  data: {builtin: reviews}
  budget: {pairs: 64, pairz: 3}
  workspace: {path: ws}
`, `pairz`},
		"wrong kind": {"kind: Job\nmetadata: {name: x}\n", "want AlignmentRun"},
		"bad yaml":   {"spec: [", "not a valid AlignmentRun"},
		"invalid value": {`kind: AlignmentRun
metadata: {name: x}
spec:
  model: {builtin: tiny-reviews}
  data: {builtin: reviews}
  loss: {beta: "-1"}
  budget: {pairs: 64}
  workspace: {path: ws}
`, "spec.loss.beta"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := DecodeRun([]byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want error mentioning %q, got %v", tc.want, err)
			}
		})
	}
	vol := newVolume(t)
	b := makeRun("unknown-model")
	b.ar.Spec.Model.Path, b.ar.Spec.Model.Builtin = "", "no-such-model"
	e := b.Env(t, vol)
	if _, err := e.LoadBase(); err == nil || !strings.Contains(err.Error(), "available") {
		t.Fatalf("unknown built-in model should list the available ones: %v", err)
	}
	b = makeRun("unknown-task")
	b.ar.Spec.Data.Builtin = "no-such-task"
	if _, err := b.Env(t, vol).Task(); err == nil || !strings.Contains(err.Error(), "reviews") {
		t.Fatalf("unknown task should list the available ones: %v", err)
	}
}

// The report is a stage of the walk: RunAll ends with it (its result names report.md and carries
// the summary), and the same report renders again from the workspace folder alone (what
// `bpo report --workspace` and a cluster's report stage read), byte for byte.
func TestReportAfterRun(t *testing.T) {
	vol := newVolume(t)
	e := makeRun("report").Env(t, vol)
	sums, err := e.RunAll(RunHooks{})
	if err != nil {
		t.Fatal(err)
	}
	r, ok := e.Done(e.Run.Phases(), v1alpha1.StageReport, -1)
	if !ok || r.Report != "report/report.md" || !strings.Contains(r.Message, "win rate") {
		t.Fatalf("report stage result: %+v (done %v)", r, ok)
	}
	md, err := os.ReadFile(filepath.Join(e.WS.Root, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	again, err := OpenRunFolder(e.WS.Root)
	if err != nil {
		t.Fatal(err)
	}
	reread, err := again.Summaries()
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(sums, reread); d != "" {
		t.Fatalf("summaries read back from the workspace differ from the run's (-run +workspace):\n%s", d)
	}
	if err := os.Remove(filepath.Join(e.WS.Root, "report.md")); err != nil {
		t.Fatal(err)
	}
	rep, err := again.RenderReport()
	if err != nil {
		t.Fatal(err)
	}
	if md2, err := os.ReadFile(filepath.Join(e.WS.Root, "report.md")); err != nil || string(md2) != string(md) {
		t.Fatalf("report rendered from the workspace folder differs from the report stage's (%v)", err)
	}
	if rep.Summary != r.Message {
		t.Fatalf("summary %q, the stage said %q", rep.Summary, r.Message)
	}
	for _, want := range []string{"Initial model vs final policy", "Per phase", "winrate.png", "Sample completions", "## Diagnostics", "train-pair accuracy"} {
		if !strings.Contains(string(md), want) {
			t.Fatalf("report.md lacks %q", want)
		}
	}
	for _, f := range []string{"winrate.png", "kl.png"} {
		data, err := os.ReadFile(filepath.Join(e.WS.Root, f))
		if err != nil || len(data) < 1000 || string(data[1:4]) != "PNG" {
			t.Fatalf("%s is not a PNG: %v", f, err)
		}
	}
	if !strings.Contains(rep.Summary, "win rate") {
		t.Fatalf("summary: %q", rep.Summary)
	}
}

// The sample stage writes the behavior model also as one PEFT adapter; base + that adapter is
// the merged behavior model it saved.
func TestBehaviorAdapterIsTheBehaviorModel(t *testing.T) {
	e := makeRun("peft").Env(t, newVolume(t))
	for _, stage := range []func() error{
		func() error { _, err := e.Sample(1, 0, 1); return err },
		func() error { _, err := e.Label(1, 0, 1); return err },
		func() error { _, err := e.Train(1, 0); return err },
		func() error { _, err := e.Train(1, 1); return err },
		func() error { _, err := e.Sample(2, 0, 1); return err },
	} {
		if err := stage(); err != nil {
			t.Fatal(err)
		}
	}
	b, err := e.LoadBase()
	if err != nil {
		t.Fatal(err)
	}
	a, err := model.LoadPEFT(e.WS.BehaviorAdapterDir(2), b.Weights.Config)
	if err != nil {
		t.Fatal(err)
	}
	if a.Rank != 2*int(e.Run.Spec.Ensemble.Rank) {
		t.Errorf("adapter rank %d, want members x rank = %d", a.Rank, 2*e.Run.Spec.Ensemble.Rank)
	}
	want, err := model.LoadWeights(e.WS.BehaviorDir(2))
	if err != nil {
		t.Fatal(err)
	}
	got := model.MergeMean(b.Weights, []*model.Adapter{a})
	if d := maxWeightDiff(got, want); d > 1e-6 {
		t.Errorf("base + behavior adapter differs from the behavior model by %g", d)
	}
	if d := maxWeightDiff(b.Weights, want); d < 1e-4 {
		t.Errorf("the behavior model is the base model (%g): the test cannot tell", d)
	}
}

// maxWeightDiff is the largest absolute difference between two models' parameters.
func maxWeightDiff(a, b *model.Weights) float64 {
	worst := 0.0
	for name, w := range b.Tensors {
		for i, v := range a.Tensors[name].Data {
			worst = max(worst, math.Abs(v-w.Data[i]))
		}
	}
	return worst
}

// halfTies ties the two responses of every prompt of even length, and otherwise scores like
// letterScorer: about half of a phase's pairs are dropped.
type halfTies struct{}

func (halfTies) Name() string { return "half-ties" }
func (halfTies) Score(p, r string) float64 {
	if len(p)%2 == 0 {
		return 0
	}
	return letterScorer{}.Score(p, r)
}

// Ties shrink a phase's pairs but not its optimizer steps: every member takes the planned
// epochsPerPhase x ceil(pairs/F / pairsPerStep) steps, so arms compare at equal steps.
func TestStepsFollowTheBudget(t *testing.T) {
	e := makeRun("steps").Env(t, newVolume(t))
	e.Scorer = halfTies{}
	if _, err := e.Sample(1, 0, 1); err != nil {
		t.Fatal(err)
	}
	l, err := e.Label(1, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	if l.Ties == 0 || l.Pairs == 0 {
		t.Fatalf("label kept %d pairs and %d ties: the test needs both", l.Pairs, l.Ties)
	}
	r, err := e.Train(1, 0)
	if err != nil {
		t.Fatal(err)
	}
	P := int(e.Run.Spec.Budget.PairsPerStep)
	want := int64(int(e.Run.Spec.Budget.EpochsPerPhase) * ((e.Run.PairsPerPhase() + P - 1) / P))
	if r.Steps != want || int(r.Steps)*e.Run.Phases() != e.Run.TotalSteps() {
		t.Errorf("%d steps with %d pairs kept of %d planned; want %d (TotalSteps %d over %d phases)", r.Steps, l.Pairs, e.Run.PairsPerPhase(), want, e.Run.TotalSteps(), e.Run.Phases())
	}
}
