package pipeline

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/bpo-dev/bpo/api/v1alpha1"
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
		"unknown baseline":   {strings.Replace(expBase, "baseline: a", "baseline: zz", 1), `baseline: "zz" is not one of the arms`},
		"duplicate arm":      {expBase + "- name: a\n", `arm "a": listed twice`},
		"bad arm name":       {expBase + "- name: Big_Arm\n", `arm "Big_Arm": name must be`},
		"seed in a patch":    {expBase + "- name: s\n  patch: {spec: {seed: 4}}\n", "arm s: patch: spec.seed is set per run"},
		"patch not a map":    {expBase + "- name: p\n  patch: [1]\n", "arm p: patch must be a mapping"},
		"bad split":          {expBase + "split: test\n", `split "test"`},
		"unknown splitPatch": {expBase + "splitPatches: {train: {}}\n", "splitPatches: unknown split"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			x, err := DecodeExperiment([]byte(c.yaml))
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
	x, err := DecodeExperiment([]byte(expBase + `- name: ema
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
		if r.AR.Spec.Seed != r.Seed || r.AR.Name != r.Name {
			t.Fatalf("%s: seed %d name %s", r.Name, r.AR.Spec.Seed, r.AR.Name)
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
	back, err := DecodeRun(runs[1].Manifest)
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
	x, err := DecodeExperiment([]byte(expBase + "- name: " + a + "\n- name: " + b + "\n"))
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
// and locally, at one annotation budget, with the schedules the grid promises.
func TestPaperExperimentIsValid(t *testing.T) {
	x, err := LoadExperiment(filepath.Join("..", "experiments", "paper.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, cluster := range []bool{true, false} {
		if _, err := x.Runs(x.ArmNames(), []int64{1, 2, 3}, SplitEval, cluster); err != nil {
			t.Fatal(err)
		}
	}
	runs, err := x.Runs(x.ArmNames(), []int64{1}, SplitEval, true)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range runs {
		s := r.AR.Spec
		if s.Budget.Pairs != runs[0].AR.Spec.Budget.Pairs {
			t.Errorf("arm %s: budget %d, not the same as the others", r.Arm, s.Budget.Pairs)
		}
		if !s.Evaluator.EveryPhase || s.Evaluator.SamplesPerPrompt != 2 || s.Budget.EvalPrompts != 300 {
			t.Errorf("arm %s: evaluation %+v, evalPrompts %d", r.Arm, s.Evaluator, s.Budget.EvalPrompts)
		}
		got[r.Arm] = fmt.Sprintf("%s/%s/F%d/m%d", s.Loss.Type, s.TrustRegion.Reference, s.TrustRegion.Phases, s.Ensemble.Members)
		if lr := s.Trainer.LearningRate; lr != "3e-3" {
			got[r.Arm] += "/lr" + string(lr)
		}
		if b := s.Loss.Beta; b != "0.1" {
			got[r.Arm] += "/b" + string(b)
		}
	}
	want := map[string]string{
		"offline-dpo": "DPO/Initial/F1/m3",
		"online-f2":   "DPO/Initial/F2/m3", "online-f4": "DPO/Initial/F4/m3", "online-f16": "DPO/Initial/F16/m3",
		"bpo-f2": "DPO/Behavior/F2/m3", "bpo-f4": "DPO/Behavior/F4/m3", "bpo-f16": "DPO/Behavior/F16/m3",
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
	// Validation runs fit the 180-prompt validation split.
	// In a cluster the eval pods get --split validation.
	val, err := x.Runs([]string{"bpo-f2"}, []int64{1}, SplitValidation, true)
	if err != nil || val[0].AR.Spec.Budget.EvalPrompts != 180 || strings.Join(val[0].AR.Spec.Evaluator.Args, " ") != "--split validation" {
		t.Fatalf("validation split: %v %+v", err, val)
	}
	if !bytes.Contains(Render(val), []byte("- --split\n    - validation")) {
		t.Fatalf("rendered manifest lacks the eval split:\n%s", Render(val))
	}
	if _, err := LoadExperiment(filepath.Join("..", "experiments", "smoke.yaml")); err != nil {
		t.Fatal(err)
	}
}

// prefixScorer judges only the first 6 bytes (what the tiny model writes) with a few 'e's
// and a deterministic hash as tie-break, so that the tiny model sometimes beats the human
// reference and the paired statistics are not degenerate.
type prefixScorer struct{}

func (prefixScorer) Name() string { return "prefix" }
func (prefixScorer) Score(_, r string) float64 {
	p := r[:min(len(r), 6)]
	h := fnv.New32a()
	h.Write([]byte(p))
	return float64(strings.Count(p, "e")) + float64(h.Sum32()%1000)/1000
}

// smokeExperiment loads experiments/smoke.yaml pointed at a tiny random model in out/runs.
func smokeExperiment(t *testing.T) (*Experiment, string) {
	t.Helper()
	x, err := LoadExperiment(filepath.Join("..", "experiments", "smoke.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := x.PatchBase([]byte("spec: {model: {builtin: null, path: models/tiny}, workspace: {path: .}}")); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	if err := os.Rename(newVolume(t), RunsDir(out)); err != nil {
		t.Fatal(err)
	}
	return x, out
}

// TestSmokeExperiment runs experiments/smoke.yaml end to end: experiment run (2 arms x 2 seeds,
// 2 at a time), a resume that skips everything, and the report, whose numbers must be those of
// the runs' eval files.
func TestSmokeExperiment(t *testing.T) {
	x, out := smokeExperiment(t)
	var stdout bytes.Buffer
	opt := ExperimentRunOptions{Out: out, Seeds: []int64{1, 2}, Parallel: 2, Scorer: prefixScorer{}, Stdout: &stdout,
		Command: "bpo experiment run -f experiments/smoke.yaml --seeds 1,2 --out OUT --split eval --parallel 2"}
	outcomes, err := RunExperiment(x, opt)
	if err != nil {
		t.Fatal(err)
	}
	if len(outcomes) != 4 || strings.Count(stdout.String(), "  held-out win ") != 4 {
		t.Fatalf("want 4 finished runs, got:\n%s", stdout.String())
	}
	volume := RunsDir(out)
	timings := map[string]RunTiming{}
	for _, o := range outcomes {
		var tm RunTiming
		if err := readJSON(filepath.Join(volume, o.Run.Name, RunTimingFile), &tm); err != nil {
			t.Fatal(err)
		}
		if !tm.Complete || tm.WallSeconds <= 0 || len(tm.Sessions) != 1 || tm.StageSeconds["train"] <= 0 || tm.Split != SplitEval {
			t.Fatalf("%s timing: %+v", o.Run.Name, tm)
		}
		timings[o.Run.Name] = tm
	}

	// Resume: everything is complete, nothing runs, no time is added.
	stdout.Reset()
	again, err := RunExperiment(x, opt)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range again {
		var tm RunTiming
		_ = readJSON(filepath.Join(volume, o.Run.Name, RunTimingFile), &tm)
		if !o.Skipped || tm.WallSeconds != timings[o.Run.Name].WallSeconds {
			t.Fatalf("%s was not skipped on resume: %+v", o.Run.Name, tm)
		}
	}
	// One folder, one split; and a changed recipe is refused rather than mixed in.
	bad := opt
	bad.Split = SplitValidation
	if _, err := RunExperiment(x, bad); err == nil || !strings.Contains(err.Error(), "split") {
		t.Fatalf("mixing splits in one folder must fail: %v", err)
	}
	changed, _ := smokeExperiment(t)
	if err := changed.PatchBase([]byte(`spec: {trainer: {learningRate: "0.02"}}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := RunExperiment(changed, opt); err == nil || !strings.Contains(err.Error(), "different recipe") {
		t.Fatalf("a changed recipe must be refused: %v", err)
	}

	doc := filepath.Join(out, "docs", "results.md")
	cmd := "bpo experiment report -f experiments/smoke.yaml --out OUT --doc " + doc
	notes := filepath.Join(out, "findings.md")
	if err := os.WriteFile(notes, []byte("BPO loses here, and this is why.\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rep, err := ReportExperiment(x, ExperimentReportOptions{Out: out, Doc: doc, Command: cmd, Notes: notes})
	if err != nil {
		t.Fatal(err)
	}
	md := rep.Markdown
	if !strings.Contains(md, "## Findings") || !strings.Contains(md, "BPO loses here, and this is why.") {
		t.Errorf("page lacks the findings from %s", notes)
	}
	if len(rep.Arms) != 2 || rep.Baseline != "offline" {
		t.Fatalf("arms: %+v", rep.Arms)
	}

	// The aggregates are the runs' eval files, and the page shows them.
	evals := func(arm string, F int) []*EvalResult {
		var out []*EvalResult
		for _, s := range []int64{1, 2} {
			var ev EvalResult
			p := filepath.Join(volume, RunName(arm, s), fmt.Sprintf("phase-%d", F), "eval", "result.json")
			if err := readJSON(p, &ev); err != nil {
				t.Fatal(err)
			}
			out = append(out, &ev)
		}
		return out
	}
	commonKL := math.Inf(1)
	for _, st := range rep.Arms {
		F := map[string]int{"offline": 1, "bpo-f2": 2}[st.Arm]
		if st.Phases != F || len(st.Seeds) != 2 || len(st.PerPhase) != F+1 {
			t.Fatalf("%s: phases %d seeds %v per-phase %d", st.Arm, st.Phases, st.Seeds, len(st.PerPhase))
		}
		ev := evals(st.Arm, F)
		check := func(what string, got Stat, f func(*EvalResult) float64) {
			want := MeanStd([]float64{f(ev[0]), f(ev[1])})
			if got.N != 2 || !near(got.Mean, want.Mean, 1e-12) || !near(got.Std, want.Std, 1e-12) {
				t.Errorf("%s %s: report %+v, eval files %+v", st.Arm, what, got, want)
			}
		}
		check("win rate", st.WinRate, func(e *EvalResult) float64 { return e.WinRate })
		check("held-out win rate", st.HeldOutWinRate, func(e *EvalResult) float64 { return e.HeldOutWinRate })
		check("gold reward", st.GoldReward, func(e *EvalResult) float64 { return e.GoldReward })
		check("held-out reward", st.HeldOutReward, func(e *EvalResult) float64 { return e.HeldOutReward })
		check("KL", st.KL, func(e *EvalResult) float64 { return e.KLToInitial })
		check("length", st.MeanLength, func(e *EvalResult) float64 { return e.MeanLength })
		check("distinct-2", st.Distinct2, func(e *EvalResult) float64 { return e.Distinct2 })
		row := regexp.MustCompile(`(?m)^\| ` + regexp.QuoteMeta(st.Arm) + ` \| 2 \| (.*)$`).FindStringSubmatch(md)
		if row == nil {
			t.Fatalf("no quality row for %s in the page:\n%s", st.Arm, md)
		}
		for _, s := range []string{st.WinRate.Format("%.3f"), st.HeldOutWinRate.Format("%.3f"), st.GoldReward.Format("%.3f")} {
			if !strings.Contains(row[1], s) {
				t.Errorf("%s row %q lacks %q", st.Arm, row[1], s)
			}
		}
		for _, ps := range st.PerPhase {
			if !ps.Evaluated || ps.PairsSoFar != ps.Phase*16/F {
				t.Errorf("%s phase %d: %+v", st.Arm, ps.Phase, ps)
			}
		}
		if !math.IsNaN(st.TieRate.Mean) && (st.TieRate.Mean < 0 || st.TieRate.Mean > 1) {
			t.Errorf("%s tie rate %v", st.Arm, st.TieRate)
		}
		if st.PairsKept.N != 2 || st.PairsKept.Mean <= 0 || st.PairsKept.Mean > 16 {
			t.Errorf("%s pairs kept %+v", st.Arm, st.PairsKept)
		}
		// The run's largest KL over its evaluations (phase 0 included) bounds the common KL.
		for _, s := range []int64{1, 2} {
			m := 0.0
			for k := 0; k <= F; k++ {
				var e EvalResult
				_ = readJSON(filepath.Join(volume, RunName(st.Arm, s), fmt.Sprintf("phase-%d", k), "eval", "result.json"), &e)
				m = math.Max(m, e.KLToInitial)
			}
			commonKL = math.Min(commonKL, m)
		}
		if math.IsNaN(st.RewardAtKL.Mean) || st.RewardAtKL.N != 2 {
			t.Errorf("%s reward at the common KL: %+v", st.Arm, st.RewardAtKL)
		}
	}
	if !near(rep.CommonKL, commonKL, 1e-12) {
		t.Fatalf("common KL %g, want %g", rep.CommonKL, commonKL)
	}
	// The paired difference is the difference of the runs' win rates, seed by seed.
	bpo := rep.arm("bpo-f2")
	if bpo.DeltaWin == nil || rep.arm("offline").DeltaWin != nil {
		t.Fatal("want a CI for bpo-f2 only")
	}
	a, b := evals("bpo-f2", 2), evals("offline", 1)
	want := ((a[0].WinRate - b[0].WinRate) + (a[1].WinRate - b[1].WinRate)) / 2
	if d := bpo.DeltaWin; !near(d.Diff, want, 1e-9) || d.Lo > d.Diff || d.Hi < d.Diff || d.Seeds != 2 || d.Prompts != 6 || d.Resamples != BootstrapResamples {
		t.Fatalf("Δ win %+v, want diff %g", d, want)
	}
	if !strings.Contains(md, fmtCI(bpo.DeltaWin)) {
		t.Fatalf("page lacks the CI %s", fmtCI(bpo.DeltaWin))
	}
	// On the samples: the per-prompt means average back to the run's sample reward, and the
	// paired difference is the difference of those, seed by seed.
	for _, ev := range append(a, b...) {
		sum := 0.0
		for _, o := range ev.PerPrompt {
			if o.SampleGold == nil || o.SampleHeldOut == nil {
				t.Fatal("per-prompt sample rewards missing")
			}
			sum += *o.SampleGold / float64(len(ev.PerPrompt))
		}
		if !near(sum, ev.GoldReward, 1e-9) {
			t.Errorf("per-prompt sample gold rewards average to %g, run's gold reward %g", sum, ev.GoldReward)
		}
	}
	wantS := ((a[0].GoldReward - b[0].GoldReward) + (a[1].GoldReward - b[1].GoldReward)) / 2
	if d := bpo.DeltaSampleGold; d == nil || !near(d.Diff, wantS, 1e-9) || bpo.DeltaSampleHeldOut == nil {
		t.Fatalf("Δ gold reward (samples) %+v, want diff %g", d, wantS)
	}
	if !strings.Contains(md, fmtCI(bpo.DeltaSampleGold)) {
		t.Fatalf("page lacks the CI %s", fmtCI(bpo.DeltaSampleGold))
	}
	for _, s := range []string{"## Setup", "16 labelled pairs per run", "parameters", "seeds | 1, 2", "total wall time",
		cmd, "--parallel 2", "## Matched KL", "## Per phase", "label tie rate", "distinct-2"} {
		if !strings.Contains(md, s) {
			t.Errorf("page lacks %q", s)
		}
	}
	for _, f := range []string{"winrate_vs_f.png", "reward_vs_f.png", "frontier.png", "phase_reward.png", "phase_kl.png"} {
		p := filepath.Join(out, "docs", "results", f)
		data, err := os.ReadFile(p)
		if err != nil || len(data) < 1000 || string(data[1:4]) != "PNG" {
			t.Errorf("%s is not a PNG: %v", p, err)
		}
		if !strings.Contains(md, "](results/"+f+")") {
			t.Errorf("page does not link %s", f)
		}
	}
	if _, err := os.Stat(filepath.Join(out, "report.json")); err != nil {
		t.Fatal(err)
	}
	if testing.Verbose() {
		t.Logf("page:\n%s", md)
	}
}

// TestTuneExperimentMatchesPaper: experiments/tune.yaml chooses the paper grid's recipe on the
// validation split, so its base must stay the paper's base: the tune arm at the paper's
// (lr, beta) must equal the paper arm, up to the evaluation settings tuning changes.
func TestTuneExperimentMatchesPaper(t *testing.T) {
	paper, err := LoadExperiment(filepath.Join("..", "experiments", "paper.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	tune, err := LoadExperiment(filepath.Join("..", "experiments", "tune.yaml"))
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
