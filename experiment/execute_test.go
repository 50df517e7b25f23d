package experiment

import (
	"bytes"
	"fmt"
	"hash/fnv"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/experiment/stats"
	"github.com/bpo-dev/bpo/pipeline"
)

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

// smokePatch points experiments/smoke.yaml at the tiny random model of newVolume.
const smokePatch = "spec: {model: {builtin: null, path: models/tiny}, ensemble: {rank: 2, alpha: 4}, workspace: {path: .}}"

// smokeExperiment loads experiments/smoke.yaml pointed at a tiny random model in out/runs.
func smokeExperiment(t *testing.T) (*Experiment, string) {
	t.Helper()
	x, err := Load(filepath.Join("..", "experiments", "smoke.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := x.PatchBase([]byte(smokePatch)); err != nil {
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
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	var stdout bytes.Buffer
	opt := RunOptions{Out: out, Seeds: []int64{1, 2}, Parallel: 2, Scorer: prefixScorer{}, Stdout: &stdout,
		Command: "bpo experiment run -f experiments/smoke.yaml --seeds 1,2 --out OUT --split eval --parallel 2"}
	outcomes, err := RunGrid(x, opt)
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
	again, err := RunGrid(x, opt)
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
	if _, err := RunGrid(x, bad); err == nil || !strings.Contains(err.Error(), "split") {
		t.Fatalf("mixing splits in one folder must fail: %v", err)
	}
	changed, _ := smokeExperiment(t)
	if err := changed.PatchBase([]byte(`spec: {trainer: {learningRate: "0.02"}}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := RunGrid(changed, opt); err == nil || !strings.Contains(err.Error(), "different recipe") {
		t.Fatalf("a changed recipe must be refused: %v", err)
	}

	doc := filepath.Join(out, "docs", "results.md")
	cmd := "bpo experiment report -f experiments/smoke.yaml --out OUT --doc " + doc
	notes := filepath.Join(out, "findings.md")
	if err := os.WriteFile(notes, []byte("BPO loses here, and this is why.\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The records go next to the page, as a repository keeps them (a relative --records-out).
	t.Chdir(out)
	rep, err := BuildReport(x, ReportOptions{Out: out, RecordsOut: filepath.Join("docs", "records.json"), Doc: doc, Command: cmd, Notes: notes})
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
	evals := func(arm string, F int) []*pipeline.EvalResult {
		var out []*pipeline.EvalResult
		for _, s := range []int64{1, 2} {
			var ev pipeline.EvalResult
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
		check := func(what string, got stats.Stat, f func(*pipeline.EvalResult) float64) {
			want := stats.MeanStd([]float64{f(ev[0]), f(ev[1])})
			if got.N != 2 || !near(got.Mean, want.Mean, 1e-12) || !near(got.Std, want.Std, 1e-12) {
				t.Errorf("%s %s: report %+v, eval files %+v", st.Arm, what, got, want)
			}
		}
		check("win rate", st.WinRate, func(e *pipeline.EvalResult) float64 { return e.WinRate })
		check("held-out win rate", st.HeldOutWinRate, func(e *pipeline.EvalResult) float64 { return e.HeldOutWinRate })
		check("gold reward", st.GoldReward, func(e *pipeline.EvalResult) float64 { return e.GoldReward })
		check("held-out reward", st.HeldOutReward, func(e *pipeline.EvalResult) float64 { return e.HeldOutReward })
		check("KL", st.KL, func(e *pipeline.EvalResult) float64 { return e.KLToInitial })
		check("length", st.MeanLength, func(e *pipeline.EvalResult) float64 { return e.MeanLength })
		check("distinct-2", st.Distinct2, func(e *pipeline.EvalResult) float64 { return e.Distinct2 })
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
		// Fresh-pair accuracy and optimizer steps per phase are the runs' own (summary.json, train results).
		for _, ps := range st.PerPhase[1:] {
			var fresh, steps []float64
			for _, s := range []int64{1, 2} {
				var sums []pipeline.PhaseSummary
				if err := readJSON(filepath.Join(volume, RunName(st.Arm, s), RunSummaryFile), &sums); err != nil {
					t.Fatal(err)
				}
				if p := sums[ps.Phase-1].FreshPairAccuracy; p != nil {
					fresh = append(fresh, *p)
				}
				var res v1alpha1.StageResult
				if err := readJSON((&pipeline.Workspace{Root: filepath.Join(volume, RunName(st.Arm, s))}).DonePath(ps.Phase, "train", 0), &res); err != nil {
					t.Fatal(err)
				}
				steps = append(steps, float64(res.Steps))
			}
			if want := stats.MeanStd(fresh); ps.FreshPairAccuracy.N != want.N || (want.N > 0 && !near(ps.FreshPairAccuracy.Mean, want.Mean, 1e-12)) {
				t.Errorf("%s phase %d fresh-pair accuracy %+v, runs %v", st.Arm, ps.Phase, ps.FreshPairAccuracy, fresh)
			}
			if (ps.Phase >= 2) != (len(fresh) == 2) {
				t.Errorf("%s phase %d: fresh-pair accuracy is defined from phase 2 on: %v", st.Arm, ps.Phase, fresh)
			}
			if want := stats.MeanStd(steps); ps.OptimizerSteps.N != 2 || ps.OptimizerSteps.Mean != want.Mean || want.Mean <= 0 {
				t.Errorf("%s phase %d steps %+v, runs %v", st.Arm, ps.Phase, ps.OptimizerSteps, steps)
			}
			row := fmt.Sprintf("| %s | %d | %d |", st.Arm, ps.Phase, ps.PairsSoFar)
			if i := strings.Index(md, row); i < 0 || !strings.Contains(md[i:i+strings.Index(md[i:], "\n")], " "+ps.FreshPairAccuracy.Format("%.3f")+" |") {
				t.Errorf("the per-phase row %q lacks the fresh-pair accuracy %s", row, ps.FreshPairAccuracy.Format("%.3f"))
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
				var e pipeline.EvalResult
				_ = readJSON(filepath.Join(volume, RunName(st.Arm, s), fmt.Sprintf("phase-%d", k), "eval", "result.json"), &e)
				m = math.Max(m, e.KLToInitial)
			}
			commonKL = math.Min(commonKL, m)
		}
	}
	// An arm is read at the common KL only if each of its runs has a trained evaluation there.
	for _, st := range rep.Arms {
		all := true
		for _, r := range st.runs {
			all = all && stats.Supported(r.Trained, rep.CommonKL, rep.KLBand)
		}
		if read := st.RewardAtKL.N == 2 && !math.IsNaN(st.RewardAtKL.Mean); read != all || (!all && st.RewardAtKL.N != 0) {
			t.Errorf("%s reward at the common KL: %+v (supported by every run: %v)", st.Arm, st.RewardAtKL, all)
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
	if d := bpo.DeltaWin; !near(d.Diff, want, 1e-9) || d.Lo > d.Diff || d.Hi < d.Diff || d.Seeds != 2 || d.Prompts != 6 || d.Resamples != stats.BootstrapResamples {
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

	// The records alone regenerate the same page, without the run folders.
	records := filepath.Join("docs", "records.json")
	if rep.Records != records || rep.RecordsBytes <= 0 || !strings.Contains(md, "`docs/records.json`") {
		t.Fatalf("records %q (%d bytes) not named on the page", rep.Records, rep.RecordsBytes)
	}
	if err := os.Rename(volume, volume+".gone"); err != nil {
		t.Fatal(err)
	}
	again2, err := BuildReport(x, ReportOptions{Records: records, Doc: doc, Command: cmd, Notes: notes})
	if err != nil {
		t.Fatal(err)
	}
	if again2.Markdown != md {
		t.Fatalf("the page from the records differs from the page from the runs:\n%s", textDiff(md, again2.Markdown))
	}
	if *update {
		data, err := os.ReadFile(records)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(wd, "testdata", "smoke-records.json"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote testdata/smoke-records.json (%d bytes): now run TestCommittedPagesUpToDate -update", len(data))
	}
	if testing.Verbose() {
		t.Logf("page:\n%s", md)
	}
}
