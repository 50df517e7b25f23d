package experiment

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/bpo-dev/bpo/experiment/stats"
)

// TestFrontierGroups checks the pooled frontiers against values worked out by hand.
func TestFrontierGroups(t *testing.T) {
	run := func(seed int64, pts ...float64) *expRun {
		var ps []stats.KLPoint
		var trained []float64
		for i := 0; i < len(pts); i += 2 {
			r := pts[i+1]
			// two prompts whose mean is the reward
			ps = append(ps, stats.KLPoint{KL: pts[i], Reward: r, PerPrompt: []float64{r - 0.1*pts[i], r + 0.1*pts[i]}})
			if i > 0 {
				trained = append(trained, pts[i])
			}
		}
		return &expRun{RunRecord: &RunRecord{Seed: seed}, Front: stats.Frontier(ps), Trained: trained}
	}
	x := &Experiment{File: File{
		Baseline:  "b",
		MatchedKL: []float64{1, 2},
		Arms:      []Arm{{Name: "b"}, {Name: "a-lo", Group: "a"}, {Name: "a-hi", Group: "a"}},
	}}
	rep := &Report{Baseline: "b", Seeds: []int64{1, 2}, CommonKL: math.NaN(), KLBand: 1, Arms: []ArmStats{
		{Arm: "b", runs: []*expRun{run(1, 0, -0.2, 1, -0.15, 2, -0.1), run(2, 0, -0.2, 1, -0.1)}},
		{Arm: "a-lo", runs: []*expRun{run(1, 0, -0.2, 1, -0.1), run(2, 0, -0.2, 1, -0.15)}},
		{Arm: "a-hi", runs: []*expRun{run(1, 0, -0.2, 4, 0), run(2, 0, -0.2, 4, -0.05)}},
	}}
	if err := rep.frontierGroups(x, 200); err != nil {
		t.Fatal(err)
	}
	if len(rep.Groups) != 2 || rep.Groups[0].Group != "b" || rep.Groups[1].Group != "a" || strings.Join(rep.Groups[1].Arms, ",") != "a-lo,a-hi" {
		t.Fatalf("groups %+v", rep.Groups)
	}
	a, b := rep.Groups[1], rep.Groups[0]
	// Band 1. a's trained KLs are {1, 4} in both seeds, so it is read at 1 (a trained point) and 2
	// (1 away from one). Seed 1: a's pooled hull is (0,-.2) (1,-.1) (4,0): -0.1 at 1, -0.1+0.1/3
	// at 2. Seed 2: (0,-.2) (1,-.15) (4,-.05): -0.15 at 1, -0.15+0.1/3 at 2.
	want := []float64{(-0.1 - 0.15) / 2, ((-0.1 + 0.1/3) + (-0.15 + 0.1/3)) / 2}
	for i, w := range want {
		if !near(a.AtKL[i].Mean, w, 1e-12) || a.AtKL[i].N != 2 {
			t.Errorf("a at KL %g: %+v, want %g", rep.MatchedKL[i], a.AtKL[i], w)
		}
	}
	if !near(a.MaxKL.Mean, 4, 1e-12) || !near(b.MaxKL.Mean, 1.5, 1e-12) {
		t.Errorf("max KL a %+v b %+v", a.MaxKL, b.MaxKL)
	}
	// b: -0.15 (seed 1, on the line (0,-.2)-(2,-.1)) and -0.1 at 1; at 2 seed 2's only trained
	// point is at 1, so 2 is outside its range: no overlap.
	if !near(b.AtKL[0].Mean, -0.125, 1e-12) || b.AtKL[1].N != 0 {
		t.Errorf("b %+v", b.AtKL)
	}
	// a pools 2 arms, b 1: a is compared with the arm b. Δ at 1: seed 1 -0.1-(-0.15) = +0.05,
	// seed 2 -0.15-(-0.1) = -0.05.
	if d := a.DeltaAtKL[0]; !near(d.Mean, 0, 1e-12) || !near(d.Std, math.Sqrt(2*0.05*0.05), 1e-12) || a.Better[0] != 1 || a.Against != "arm b" {
		t.Errorf("Δ at 1 %+v better %d against %q", d, a.Better[0], a.Against)
	}
	// The bootstrap at matched KL is about the same difference, prompt by prompt.
	if c := a.DeltaCI[0]; c == nil || !near(c.Diff, a.DeltaAtKL[0].Mean, 1e-12) || c.Prompts != 2 || c.Seeds != 2 || c.Lo > c.Diff || c.Hi < c.Diff || !c.SeedsResampled {
		t.Errorf("Δ CI at 1: %+v", c)
	}
	if a.DeltaCI[1] != nil {
		t.Errorf("no CI where the baseline has no trained point: %+v", a.DeltaCI[1])
	}
	for _, s := range []int64{1, 2} {
		for _, kl := range []float64{0, 0.5, 1, 2.5, 4} {
			v, ok := stats.FrontierPerPrompt(a.fronts[s], kl)
			m, _ := stats.FrontierAt(a.fronts[s], kl)
			if !ok || !near((v[0]+v[1])/2, m, 1e-12) {
				t.Errorf("seed %d KL %g: per-prompt %v, frontier %g", s, kl, v, m)
			}
		}
	}
	if d := a.DeltaAtKL[1]; d.N != 0 {
		t.Errorf("Δ at 2 must be empty (the baseline's seed 2 has its only trained point at KL 1): %+v", d)
	}
	if len(b.DeltaAtKL) != 0 {
		t.Errorf("baseline group has deltas %+v", b.DeltaAtKL)
	}
	var sb strings.Builder
	rep.groupTable(func(f string, args ...any) { sb.WriteString(fmtSprintf(f, args...)) })
	for _, s := range []string{"| a | a-lo, a-hi | 2 | 4 ± 0 | arm b |", "+0.000 ± 0.071 (1/2)", "reward at KL 1", "minus **b**", "within ±1 of that KL", "| *no overlap* |"} {
		if !strings.Contains(sb.String(), s) {
			t.Errorf("table lacks %q:\n%s", s, sb.String())
		}
	}
	if p, err := rep.plotGroupFrontiers(); err != nil || p == nil {
		t.Errorf("group plot: %v %v", p, err)
	}

	// A group that mixes schedules is flagged.
	rep.Arms[1].Phases, rep.Arms[2].Phases = 1, 2
	rep.Checks = nil
	if err := rep.frontierGroups(x, 200); err != nil {
		t.Fatal(err)
	}
	if len(rep.Checks) != 1 || !strings.Contains(rep.Checks[0], "group a pools a-lo and a-hi") {
		t.Errorf("checks %q", rep.Checks)
	}
}

func TestExperimentFileFrontierFields(t *testing.T) {
	base := "base: {apiVersion: alignment.bpo.dev/v1alpha1, kind: AlignmentRun, metadata: {name: x}, spec: {}}\nbaseline: a\n"
	for _, c := range []struct{ yaml, want string }{
		{base + "matchedKL: [-1]\narms: [{name: a}]\n", "matchedKL[0]"},
		{base + "arms: [{name: a, group: Bad_Group}]\n", "group"},
		{base + "klBand: 0\narms: [{name: a}]\n", "klBand: 0 is not a band"},
		{base + "klBand: -1\narms: [{name: a}]\n", "klBand"},
	} {
		if _, err := Decode([]byte(c.yaml)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want one naming %q", c.yaml, err, c.want)
		}
	}
}

func fmtSprintf(f string, args ...any) string { return fmt.Sprintf(f, args...) }

// TestFrontierGroupsYardstick: a pooled group is compared with the pooled baseline group, a
// single arm with the baseline arm alone (pooling can only raise a frontier).
func TestFrontierGroupsYardstick(t *testing.T) {
	// Every run: the initial model (0, -0.2), then its trained points.
	run := func(pts ...float64) *expRun {
		ps := []stats.KLPoint{{KL: 0, Reward: -0.2, PerPrompt: []float64{-0.2}}}
		var trained []float64
		for i := 0; i < len(pts); i += 2 {
			ps = append(ps, stats.KLPoint{KL: pts[i], Reward: pts[i+1], PerPrompt: []float64{pts[i+1]}})
			trained = append(trained, pts[i])
		}
		return &expRun{RunRecord: &RunRecord{Seed: 1}, Front: stats.Frontier(ps), Trained: trained}
	}
	x := &Experiment{File: File{
		Baseline:  "b",
		MatchedKL: []float64{1},
		Arms: []Arm{{Name: "b", Group: "b"}, {Name: "b-lo", Group: "b"},
			{Name: "a", Group: "a"}, {Name: "a-lo", Group: "a"}, {Name: "c"}},
	}}
	rep := &Report{Baseline: "b", Seeds: []int64{1}, CommonKL: math.NaN(), KLBand: 0.5, Arms: []ArmStats{
		{Arm: "b", runs: []*expRun{run(1, -0.1, 4, 0)}}, {Arm: "b-lo", runs: []*expRun{run(1, -0.05)}},
		{Arm: "a", runs: []*expRun{run(1, -0.12, 4, 0)}}, {Arm: "a-lo", runs: []*expRun{run(1, -0.1)}},
		{Arm: "c", runs: []*expRun{run(1, -0.15, 2, -0.1)}},
	}}
	if err := rep.frontierGroups(x, 100); err != nil {
		t.Fatal(err)
	}
	a, c := rep.group("a"), rep.group("c")
	// At KL 1: a pooled -0.1, b pooled -0.05; c alone -0.15, arm b alone -0.1.
	if a.Against != "group b" || !near(a.DeltaAtKL[0].Mean, -0.05, 1e-12) {
		t.Errorf("a: against %q Δ %+v", a.Against, a.DeltaAtKL)
	}
	if c.Against != "arm b" || !near(c.DeltaAtKL[0].Mean, -0.05, 1e-12) {
		t.Errorf("c: against %q Δ %+v", c.Against, c.DeltaAtKL)
	}
}

// TestCommonKLNeedsTrainedPoints: the per-arm table reads every run at the common KL only where
// the run has a trained evaluation around it.
func TestCommonKLNeedsTrainedPoints(t *testing.T) {
	run := func(name string, pts ...float64) *expRun {
		ps := []stats.KLPoint{{KL: 0, Reward: 0}}
		var trained []float64
		for i := 0; i < len(pts); i += 2 {
			ps = append(ps, stats.KLPoint{KL: pts[i], Reward: pts[i+1]})
			trained = append(trained, pts[i])
		}
		return &expRun{RunRecord: &RunRecord{Name: name}, Front: stats.Frontier(ps), Trained: trained}
	}
	rep := &Report{KLBand: 0.5, Arms: []ArmStats{
		{Arm: "short", runs: []*expRun{run("short-s1", 1, 0.1)}},                        // sets the common KL: 1
		{Arm: "near", runs: []*expRun{run("near-s1", 1.4, 0.2, 3, 0.3)}},                // trained at 1.4: 0.4 away, but 1 < 1.4: outside its range
		{Arm: "spans", runs: []*expRun{run("spans-s1", 0.8, 0.1, 3, 0.4)}},              // 0.8 <= 1 <= 3 and 0.2 away: read
		{Arm: "gap", runs: []*expRun{run("gap-s1", 0.2, 0.05, 3, 0.4)}},                 // 0.2 .. 3: 1 is 0.8 from both: no overlap
		{Arm: "two-seeds", runs: []*expRun{run("ts-s1", 1, 0.1), run("ts-s2", 2, 0.2)}}, // one seed cannot: the arm gets no value
	}}
	rep.matchedKL()
	if rep.CommonKL != 1 || rep.KLLimiter != "short-s1" {
		t.Fatalf("common KL %g from %s", rep.CommonKL, rep.KLLimiter)
	}
	// spans: (0.8, 0.1) lies under the line from (0, 0) to (3, 0.4), so the frontier there is 0.4/3.
	want := map[string]float64{"short": 0.1, "spans": 0.4 / 3}
	for _, st := range rep.Arms {
		w, ok := want[st.Arm]
		if got := st.RewardAtKL; ok != (got.N > 0) || (ok && !near(got.Mean, w, 1e-12)) {
			t.Errorf("%s: %+v, want %v (read: %v)", st.Arm, got, w, ok)
		}
	}
}
