package experiment

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/pipeline"
	"github.com/bpo-dev/bpo/trainer/task"
)

const expBase = `
baseline: a
base:
  kind: AlignmentRun
  metadata: {name: x}
  spec:
    model: {path: models/tiny}
    data: {builtin: reviews}
    budget: {pairs: 16, pairsPerStep: 4}
    workspace: {path: ws}
arms:
- name: a
`

func TestExperimentFileErrors(t *testing.T) {
	cases := map[string]struct{ yaml, want string }{
		"unknown top-level field": {expBase + "bogus: 1\n", "bogus"},
		"misspelt field in a patch": {expBase + "- name: bad\n  patch: {spec: {budget: {pairz: 3}}}\n",
			"arm bad (run bad-s1): not a valid AlignmentRun"},
		"invalid value in a patch": {expBase + "- name: bad\n  patch: {spec: {trustRegion: {phases: 3}}}\n",
			"arm bad (run bad-s1): spec.budget.pairs"},
		"EMA without alpha": {expBase + "- name: ema\n  patch: {spec: {trustRegion: {reference: EMA}}}\n",
			"arm ema (run ema-s1): spec.trustRegion.emaAlpha"},
		"unknown baseline":                  {strings.Replace(expBase, "baseline: a", "baseline: zz", 1), `baseline: "zz" is not one of the arms`},
		"duplicate arm":                     {expBase + "- name: a\n", `arm "a": listed twice`},
		"bad arm name":                      {expBase + "- name: Big_Arm\n", `arm "Big_Arm": name must be`},
		"seed in a patch":                   {expBase + "- name: s\n  patch: {spec: {seed: 4}}\n", "arm s: patch: spec.seed is set per run"},
		"patch not a map":                   {expBase + "- name: p\n  patch: [1]\n", "arm p: patch must be a mapping"},
		"bad split":                         {expBase + "split: test\n", `split "test"`},
		"unknown splitPatch":                {expBase + "splitPatches: {train: {}}\n", "splitPatches: unknown split"},
		"comparison of an unknown arm":      {expBase + "comparisons: [{arm: zz, against: a}]\n", `comparisons[0].arm: "zz" is not one of the arms`},
		"comparison against an unknown arm": {expBase + "comparisons: [{arm: a, against: zz}]\n", `comparisons[0].against: "zz" is not one of the arms`},
		"comparison with itself":            {expBase + "comparisons: [{arm: a, against: a}]\n", "comparisons[0]: a against itself"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			x, err := Decode([]byte(c.yaml))
			if err == nil {
				_, err = x.Runs(x.ArmNames(), []int64{1, 2}, SplitEval, false)
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want an error containing %q, got %v", c.want, err)
			}
		})
	}
}

func TestExperimentRunsResolve(t *testing.T) {
	x, err := Decode([]byte(expBase + `- name: ema
  patch:
    spec:
      trustRegion: {reference: EMA, emaAlpha: 0.5, phases: 2}   # a YAML number becomes the decimal "0.5"
      budget: {pairs: 32, pairsPerStep: null}                     # null removes a key (merge patch)
`))
	if err != nil {
		t.Fatal(err)
	}
	runs, err := x.Runs([]string{"a", "ema"}, []int64{3, 7}, SplitEval, false)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range runs {
		names = append(names, r.Name)
		if r.AR.Spec.Seed == nil || *r.AR.Spec.Seed != r.Seed || r.AR.Name != r.Name {
			t.Fatalf("%s: seed %v name %s", r.Name, r.AR.Spec.Seed, r.AR.Name)
		}
	}
	if got := strings.Join(names, " "); got != "a-s3 ema-s3 a-s7 ema-s7" {
		t.Fatalf("runs in order seed-major: %s", got)
	}
	ema := runs[1].AR.Spec
	if *ema.TrustRegion.EMAAlpha != "0.5" || ema.TrustRegion.Phases != 2 || ema.Budget.PairsPerStep != v1alpha1.DefaultPairsPerStep {
		t.Fatalf("patched spec: %+v %+v", ema.TrustRegion, ema.Budget)
	}
	if runs[0].AR.Spec.TrustRegion.Reference != v1alpha1.ReferenceBehavior {
		t.Fatal("arm without a patch should be the (defaulted) base")
	}
	// The manifest is clean YAML that round-trips to the same run.
	back, err := pipeline.DecodeRun(runs[1].Manifest)
	if err != nil || back.Spec.TrustRegion.Reference != v1alpha1.ReferenceEMA {
		t.Fatalf("manifest does not round-trip: %v\n%s", err, runs[1].Manifest)
	}
	if bytes.Contains(runs[1].Manifest, []byte("status")) || bytes.Contains(runs[1].Manifest, []byte("{}")) {
		t.Fatalf("manifest has noise:\n%s", runs[1].Manifest)
	}
	// Cluster rules: the base has only a local path.
	if _, err := x.Runs([]string{"a"}, []int64{1}, SplitEval, true); err == nil || !strings.Contains(err.Error(), "persistentVolumeClaim") {
		t.Fatalf("render needs a PVC workspace: %v", err)
	}
}

func TestRunNames(t *testing.T) {
	label := regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	long := "a-very-long-arm-name-that-goes-on-and-on-and-on"
	for _, c := range []struct {
		arm  string
		seed int64
	}{{"bpo-f2", 1}, {long, 1}, {long, 123456}, {"x-" + strings.Repeat("y", 35) + "-z", 12}} {
		n := RunName(c.arm, c.seed)
		if len(n) > v1alpha1.MaxRunNameLength || !label.MatchString(n) || !strings.HasSuffix(n, fmt.Sprintf("-s%d", c.seed)) {
			t.Errorf("RunName(%q, %d) = %q", c.arm, c.seed, n)
		}
	}
	if RunName("bpo-f2", 3) != "bpo-f2-s3" {
		t.Fatal(RunName("bpo-f2", 3))
	}
	// Two arms that only differ after the cut collide: an error naming both.
	a, b := long+"-one", long+"-two"
	x, err := Decode([]byte(expBase + "- name: " + a + "\n- name: " + b + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = x.Runs(x.ArmNames(), []int64{1}, SplitEval, false)
	if err == nil || !strings.Contains(err.Error(), a) || !strings.Contains(err.Error(), b) {
		t.Fatalf("collision not reported: %v", err)
	}
}

func TestParseSeeds(t *testing.T) {
	s, err := ParseSeeds("1, 2,3")
	if err != nil || len(s) != 3 || s[2] != 3 {
		t.Fatalf("%v %v", s, err)
	}
	for _, bad := range []string{"", "0", "1,x", "2,2", "-1"} {
		if _, err := ParseSeeds(bad); err == nil {
			t.Errorf("ParseSeeds(%q) should fail", bad)
		}
	}
}

// TestPaperExperimentIsValid checks experiments/paper.yaml: every arm resolves for the cluster
// and locally, at one annotation budget and one number of planned optimizer steps, with the
// schedules and seeds the grid promises, and the single-adapter ablation starts from the
// ensemble arms' initial model.
func TestPaperExperimentIsValid(t *testing.T) {
	x, err := Load(filepath.Join("..", "experiments", "paper.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	seeds, err := x.SeedsOrDefault(nil)
	if err != nil || fmt.Sprint(seeds) != "[1 2 3 4 5]" {
		t.Fatalf("seeds %v %v", seeds, err)
	}
	for _, cluster := range []bool{true, false} {
		if _, err := x.Runs(x.ArmNames(), seeds, SplitEval, cluster); err != nil {
			t.Fatal(err)
		}
	}
	runs, err := x.Runs(x.ArmNames(), []int64{1}, SplitEval, true)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	steps := map[string]int{}
	for _, r := range runs {
		s := r.AR.Spec
		if s.Budget.Pairs != runs[0].AR.Spec.Budget.Pairs {
			t.Errorf("arm %s: budget %d, not the same as the others", r.Arm, s.Budget.Pairs)
		}
		if !s.Evaluator.EveryPhase || s.Evaluator.SamplesPerPrompt != 2 || s.Budget.EvalPrompts != 300 {
			t.Errorf("arm %s: evaluation %+v, evalPrompts %d", r.Arm, s.Evaluator, s.Budget.EvalPrompts)
		}
		if s.Sampler.MaxNewTokens != 64 {
			t.Errorf("arm %s: maxNewTokens %d, want small-reviews' 64", r.Arm, s.Sampler.MaxNewTokens)
		}
		// Planned optimizer steps per member, as the trainer schedules them.
		run, err := pipeline.NewRun(r.AR)
		if err != nil {
			t.Fatal(err)
		}
		steps[r.Arm] = run.TotalSteps()
		got[r.Arm] = fmt.Sprintf("%s/%s/F%d/m%d", s.Loss.Type, s.TrustRegion.Reference, s.TrustRegion.Phases, s.Ensemble.Members)
		if lr := s.Trainer.LearningRate; lr != "3e-3" {
			got[r.Arm] += "/lr" + string(lr)
		}
		if b := s.Loss.Beta; b != "0.1" {
			got[r.Arm] += "/b" + string(b)
		}
		n := len(x.ArmSeeds(r.Arm, seeds))
		if a, _ := x.Arm(r.Arm); (a.Main && n != 5) || (!a.Main && n != 3) {
			t.Errorf("arm %s (main %v): %d seeds, want 5 for main arms and 3 for the others", r.Arm, a.Main, n)
		}
	}
	for a, n := range steps {
		if n != steps[x.Baseline] {
			t.Errorf("arm %s plans %d optimizer steps per member, the baseline %d: equal steps across F", a, n, steps[x.Baseline])
		}
	}
	want := map[string]string{
		"offline-dpo": "DPO/Initial/F1/m3",
		"online-f2":   "DPO/Initial/F2/m3", "online-f4": "DPO/Initial/F4/m3",
		"bpo-f2": "DPO/Behavior/F2/m3", "bpo-f4": "DPO/Behavior/F4/m3",
		"bpo-ema-f4":  "DPO/EMA/F4/m3",
		"ipo-offline": "IPO/Initial/F1/m3", "ipo-bpo-f2": "IPO/Behavior/F2/m3",
		"slic-offline": "SLiC/Initial/F1/m3", "slic-bpo-f2": "SLiC/Behavior/F2/m3",
		"bpo-f2-m1":          "DPO/Behavior/F2/m1",
		"offline-dpo-lr1e-3": "DPO/Initial/F1/m3/lr1e-3", "online-f2-lr1e-3": "DPO/Initial/F2/m3/lr1e-3", "bpo-f2-lr1e-3": "DPO/Behavior/F2/m3/lr1e-3",
		"offline-dpo-b0p3": "DPO/Initial/F1/m3/b0.3", "online-f2-b0p3": "DPO/Initial/F2/m3/b0.3", "bpo-f2-b0p3": "DPO/Behavior/F2/m3/b0.3",
	}
	if len(got) != len(want) {
		t.Errorf("arms %v, want %v", got, want)
	}
	for a, w := range want {
		if got[a] != w {
			t.Errorf("arm %s: %s, want %s", a, got[a], w)
		}
	}
	var main []string
	for _, a := range x.Arms {
		if a.Main {
			main = append(main, a.Name)
		}
	}
	if strings.Join(main, ",") != "offline-dpo,online-f2,bpo-f2,bpo-f4,bpo-ema-f4" {
		t.Errorf("main arms %v", main)
	}
	// The single adapter starts from the ensemble arms' initial model: a derived model stacking
	// as many of the built-in model's adapters as the ensemble has members, with their total rank.
	for _, r := range runs {
		if r.Arm != "bpo-f2-m1" {
			continue
		}
		ens, s := runs[0].AR.Spec, r.AR.Spec
		var d *DerivedModel
		for i := range x.Models {
			if ModelsDir+"/"+x.Models[i].Name == s.Model.Path {
				d = &x.Models[i]
			}
		}
		if d == nil || d.Builtin != ens.Model.Builtin || int32(d.StackAdapters) != ens.Ensemble.Members ||
			s.Ensemble.Rank != ens.Ensemble.Members*ens.Ensemble.Rank || s.Ensemble.Alpha != ens.Ensemble.Alpha {
			t.Errorf("bpo-f2-m1 does not start from the ensemble's initial model: model %+v ensemble %+v (derived %+v)", s.Model, s.Ensemble, d)
		}
	}
	// Validation runs use the whole validation split (Runs checks that they fit it).
	// In a cluster the eval pods get --split validation.
	rev, err := task.Builtin("reviews")
	if err != nil {
		t.Fatal(err)
	}
	val, err := x.Runs([]string{"bpo-f2"}, []int64{1}, SplitValidation, true)
	if err != nil || int(val[0].AR.Spec.Budget.EvalPrompts) != len(rev.Validation) || strings.Join(val[0].AR.Spec.Evaluator.Args, " ") != "--split validation" {
		t.Fatalf("validation split: %v %+v", err, val)
	}
	if !bytes.Contains(Render(val), []byte("- --split\n    - validation")) {
		t.Fatalf("rendered manifest lacks the eval split:\n%s", Render(val))
	}
	if _, err := Load(filepath.Join("..", "experiments", "smoke.yaml")); err != nil {
		t.Fatal(err)
	}
}

// TestTuneExperimentMatchesPaper: experiments/tune.yaml chooses the paper grid's recipe on the
// validation split, so its base must stay the paper's base: the tune arm at the paper's
// (lr, beta) must equal the paper arm, up to the evaluation settings tuning changes.
func TestTuneExperimentMatchesPaper(t *testing.T) {
	paper, err := Load(filepath.Join("..", "experiments", "paper.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	tune, err := Load(filepath.Join("..", "experiments", "tune.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if tune.Split != SplitValidation {
		t.Fatalf("tune.yaml split %q: choices are made on the validation split", tune.Split)
	}
	runs, err := tune.Runs(tune.ArmNames(), []int64{1}, SplitValidation, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 18 {
		t.Errorf("%d tuning runs, want 2 arms x 3 lr x 3 beta = 18", len(runs))
	}
	for _, c := range []struct{ tune, paper string }{{"offline-lr3e-3-b0p1", "offline-dpo"}, {"bpo-f2-lr3e-3-b0p1", "bpo-f2"}} {
		tr, err := tune.Runs([]string{c.tune}, []int64{1}, SplitValidation, true)
		if err != nil {
			t.Fatal(err)
		}
		pr, err := paper.Runs([]string{c.paper}, []int64{1}, SplitValidation, true)
		if err != nil {
			t.Fatal(err)
		}
		ts, ps := tr[0].AR.Spec.DeepCopy(), pr[0].AR.Spec.DeepCopy()
		ts.Evaluator.EveryPhase, ps.Evaluator.EveryPhase = false, false
		ts.Workspace.SubPath, ps.Workspace.SubPath = "", ""
		if !reflect.DeepEqual(ts, ps) {
			a, _ := json.Marshal(ts)
			b, _ := json.Marshal(ps)
			t.Errorf("tune arm %s drifted from paper arm %s:\n tune  %s\n paper %s", c.tune, c.paper, a, b)
		}
	}
}

// TestArmSeeds: an arm that lists seeds runs only those of the grid's seeds; the default seeds
// are every seed the file names.
func TestArmSeeds(t *testing.T) {
	x, err := Decode([]byte(expBase + "  seeds: [1, 2, 3, 4, 5]\n- name: abl\n  patch: {spec: {budget: {pairs: 32}}}\nseeds: [1, 2, 3]\n"))
	if err != nil {
		t.Fatal(err)
	}
	seeds, err := x.SeedsOrDefault(nil)
	if err != nil || fmt.Sprint(seeds) != "[1 2 3 4 5]" {
		t.Fatalf("default seeds %v %v", seeds, err)
	}
	for _, c := range []struct {
		seeds []int64
		want  string
	}{
		{seeds, "a-s1 abl-s1 a-s2 abl-s2 a-s3 abl-s3 a-s4 a-s5"},
		{[]int64{2, 5}, "a-s2 abl-s2 a-s5"}, // --seeds 2,5: the ablation (the file's seeds) has no seed 5
		{[]int64{6}, ""},                    // neither arm has seed 6
	} {
		runs, err := x.Runs(x.ArmNames(), c.seeds, SplitEval, false)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, r := range runs {
			names = append(names, r.Name)
		}
		if got := strings.Join(names, " "); got != c.want {
			t.Errorf("seeds %v: runs %s, want %s", c.seeds, got, c.want)
		}
	}
	// Without any seeds in the file, an arm without its own needs --seeds.
	y, _ := Decode([]byte(expBase + "  seeds: [1]\n- name: b\n"))
	if got := y.ArmSeeds("b", []int64{7}); fmt.Sprint(got) != "[7]" {
		t.Errorf("an arm without seeds in a file without seeds runs what it is given: %v", got)
	}
	if _, err := y.SeedsOrDefault(nil); err == nil || !strings.Contains(err.Error(), "arm b has no seeds") {
		t.Fatalf("want an error naming arm b: %v", err)
	}
	if _, err := Decode([]byte(expBase + "  seeds: [1, 1]\n")); err == nil || !strings.Contains(err.Error(), "arm a: seeds") {
		t.Fatalf("duplicate seed: %v", err)
	}
}

// TestRegimeExperiment checks experiments/regime.yaml: every cell of pairs x tokens has an
// offline and a BPO F = 2 arm with the same budget, length and planned optimizer steps.
func TestRegimeExperiment(t *testing.T) {
	x, err := Load(filepath.Join("..", "experiments", "regime.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := x.Runs(x.ArmNames(), []int64{1, 2}, SplitEval, true); err != nil {
		t.Fatal(err)
	}
	runs, err := x.Runs(x.ArmNames(), []int64{1}, SplitEval, false)
	if err != nil {
		t.Fatal(err)
	}
	type cell struct{ pairs, tokens int32 }
	steps := map[cell]map[string]int{}
	for _, r := range runs {
		s := r.AR.Spec
		c := cell{s.Budget.Pairs, s.Sampler.MaxNewTokens}
		if want := fmt.Sprintf("-p%d-t%d", c.pairs, c.tokens); !strings.HasSuffix(r.Arm, want) {
			t.Errorf("arm %s holds cell %s", r.Arm, want)
		}
		run, err := pipeline.NewRun(r.AR)
		if err != nil {
			t.Fatal(err)
		}
		if steps[c] == nil {
			steps[c] = map[string]int{}
		}
		steps[c][fmt.Sprintf("%s/F%d", s.TrustRegion.Reference, s.TrustRegion.Phases)] = run.TotalSteps()
	}
	for _, p := range []int32{256, 512} {
		for _, tk := range []int32{32, 64} {
			st := steps[cell{p, tk}]
			off, okO := st["Initial/F1"]
			bpo, okB := st["Behavior/F2"]
			if !okO || !okB || off != bpo || off != 2*int(p)/16 {
				t.Errorf("cell %d pairs x %d tokens: steps %v, want offline and BPO F = 2 at %d each", p, tk, st, 2*int(p)/16)
			}
			for k, v := range st {
				if v != off {
					t.Errorf("cell %d x %d: %s plans %d steps, offline %d", p, tk, k, v, off)
				}
			}
		}
	}
}

// TestEveryExperimentFileResolves resolves every experiments/*.yaml for all its arms and seeds,
// on the eval split and on the validation split, locally and (unless the file is local-only) for
// the cluster: a file that would fail at its first run (a misspelt field, more eval prompts than
// the split has) fails here.
func TestEveryExperimentFileResolves(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("..", "experiments", "*.yaml"))
	if len(files) < 4 {
		t.Fatalf("found only %v", files)
	}
	for _, f := range files {
		x, err := Load(f)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		seeds, err := x.SeedsOrDefault(nil)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		for _, split := range []string{SplitEval, SplitValidation} {
			runs, err := x.Runs(x.ArmNames(), seeds, split, false)
			if err != nil {
				t.Errorf("%s (split %s, local): %v", filepath.Base(f), split, err)
				continue
			}
			// A file written for the local runner only (smoke.yaml: spec.workspace.path) is not
			// meant for a cluster.
			if ws := runs[0].AR.Spec.Workspace; ws.PersistentVolumeClaim == nil && ws.ObjectStore == nil {
				continue
			}
			if _, err := x.Runs(x.ArmNames(), seeds, split, true); err != nil {
				t.Errorf("%s (split %s, cluster): %v", filepath.Base(f), split, err)
			}
		}
	}
}

// TestRunsRejectTooManyEvalPrompts: a grid whose evalPrompts exceeds the built-in task's split
// stops before any run, with the field and the split's size in the error.
func TestRunsRejectTooManyEvalPrompts(t *testing.T) {
	x := smokeFixture(t)
	x.SplitPatches = map[string]json.RawMessage{SplitValidation: json.RawMessage(`{"spec":{"budget":{"evalPrompts":100000}}}`)}
	if _, err := x.Runs(x.ArmNames(), []int64{1}, SplitEval, false); err != nil {
		t.Fatalf("eval split: %v", err)
	}
	_, err := x.Runs(x.ArmNames(), []int64{1}, SplitValidation, false)
	if err == nil || !strings.Contains(err.Error(), "spec.budget.evalPrompts is 100000 but the validation split of task reviews has") {
		t.Fatalf("got %v, want the evalPrompts error", err)
	}
}
