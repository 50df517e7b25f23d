package controllers

import (
	"context"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	alignv1 "github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/controllers/testutil"
)

func TestPhaseSummary(t *testing.T) {
	cases := []struct {
		name string
		pr   alignv1.PhaseResult
		want string
	}{
		{"trained, not evaluated",
			alignv1.PhaseResult{Phase: 1, CompletedStages: []string{"sample", "label", "train"}, PairsKept: 7, Ties: 1,
				Loss: "0.65", RewardAccuracy: "0.55", KLToReference: "0.015", KLToInitial: "0.1"},
			"phase 1/2 completed: 7 pairs kept, 1 ties, loss 0.65, reward accuracy 0.55, KL to reference 0.015, KL to initial 0.1"},
		{"evaluated",
			alignv1.PhaseResult{Phase: 2, CompletedStages: []string{"sample", "label", "train", "eval"}, PairsKept: 8, Ties: 0,
				Loss: "0.6", RewardAccuracy: "0.7", KLToReference: "0.02", KLToInitial: "0.2", WinRate: "0.7"},
			"phase 2/2 completed: 8 pairs kept, 0 ties, loss 0.6, reward accuracy 0.7, KL to reference 0.02, KL to initial 0.2, win rate 0.7"},
		{"missing numbers are dashes",
			alignv1.PhaseResult{Phase: 2, CompletedStages: []string{"sample", "label", "train", "eval"}},
			"phase 2/2 completed: 0 pairs kept, 0 ties, loss -, reward accuracy -, KL to reference -, KL to initial -, win rate -"},
	}
	for _, c := range cases {
		if got := phaseSummary(&c.pr, 2); got != c.want {
			t.Errorf("%s:\n got  %s\n want %s", c.name, got, c.want)
		}
		if strings.Contains(phaseSummary(&c.pr, 2), "\n") {
			t.Errorf("%s: the summary is not one line", c.name)
		}
	}
}

func TestSampleRun(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	done := &metav1.Time{}
	cases := []struct {
		name string
		st   alignv1.AlignmentRunStatus
		want runSample
	}{
		{"new run", alignv1.AlignmentRunStatus{}, runSample{state: alignv1.StatePending}},
		{"state derived when not written yet",
			alignv1.AlignmentRunStatus{Phases: 2, Conditions: []metav1.Condition{{Type: alignv1.ConditionRunning, Status: metav1.ConditionTrue}}},
			runSample{state: alignv1.StateRunning, phases: 2}},
		{"sums over phases, newest values, out-of-order entries",
			alignv1.AlignmentRunStatus{State: alignv1.StateRunning, Phases: 3, LatestWinRate: "0.61", PhaseResults: []alignv1.PhaseResult{
				{Phase: 2, PairsSampled: 9, PairsKept: 8, Ties: 0, Loss: "0.5", RewardAccuracy: "0.7", KLToReference: "0.02", KLToInitial: "0.3"},
				{Phase: 1, PairsSampled: 10, PairsKept: 7, Ties: 2, Loss: "0.6", RewardAccuracy: "0.6", KLToReference: "0.01", KLToInitial: "0.1", WinRate: "0.61", CompletionTime: done},
				{Phase: 3, PairsSampled: 4}, // in progress: sampled, not trained
			}},
			runSample{state: alignv1.StateRunning, phasesDone: 1, phases: 3, pairsSampled: 23, pairsKept: 15, ties: 2,
				loss: f(0.5), rewardAccuracy: f(0.7), klToReference: f(0.02), klToInitial: f(0.3), winRate: f(0.61)}},
		{"the baseline is not a phase done; live progress of the running stage",
			alignv1.AlignmentRunStatus{State: alignv1.StateRunning, Phases: 2, BaselineWinRate: "0.25", LatestWinRate: "",
				StageProgress: &alignv1.StageProgress{Phase: 1, Stage: "train", Done: 16, Total: 64, Rate: "3.5"},
				PhaseResults:  []alignv1.PhaseResult{{Phase: 0, WinRate: "0.25", CompletionTime: done}}},
			runSample{state: alignv1.StateRunning, phases: 2, baselineWinRate: f(0.25), stageProgress: f(0.25), stageRate: f(3.5)}},
		{"unparsable numbers are left out",
			alignv1.AlignmentRunStatus{State: alignv1.StateFailed, Phases: 1, LatestWinRate: "n/a", PhaseResults: []alignv1.PhaseResult{{Phase: 1, Loss: "NaN?"}}},
			runSample{state: alignv1.StateFailed, phases: 1}},
	}
	show := func(p *float64) any {
		if p == nil {
			return nil
		}
		return *p
	}
	for _, c := range cases {
		got := sampleRun(&c.st)
		g := []any{got.state, got.phasesDone, got.phases, got.pairsSampled, got.pairsKept, got.ties, show(got.loss), show(got.rewardAccuracy), show(got.klToReference), show(got.klToInitial), show(got.winRate),
			show(got.baselineWinRate), show(got.stageProgress), show(got.stageRate)}
		w := []any{c.want.state, c.want.phasesDone, c.want.phases, c.want.pairsSampled, c.want.pairsKept, c.want.ties, show(c.want.loss), show(c.want.rewardAccuracy), show(c.want.klToReference), show(c.want.klToInitial), show(c.want.winRate),
			show(c.want.baselineWinRate), show(c.want.stageProgress), show(c.want.stageRate)}
		if !slices.Equal(g, w) {
			t.Errorf("%s:\n got  %v\n want %v", c.name, g, w)
		}
	}
}

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

// TestMetricsListed: Metrics() names exactly the families the registered collectors describe,
// so the docs and the dashboard, checked against Metrics(), cannot miss or invent one.
func TestMetricsListed(t *testing.T) {
	ch := make(chan *prometheus.Desc, 100)
	for _, c := range collectors {
		c.Describe(ch)
	}
	close(ch)
	var described []string
	for d := range ch {
		m := fqName.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("cannot read the name of %s", d)
		}
		described = append(described, m[1])
	}
	var listed []string
	for _, m := range Metrics() {
		listed = append(listed, m.Name)
		if m.Help == "" || len(m.Labels) == 0 || !slices.Contains([]string{TypeGauge, TypeCounter, TypeHistogram}, m.Type) {
			t.Errorf("incomplete description %+v", m)
		}
		if m.Type == TypeCounter != strings.HasSuffix(m.Name, "_total") {
			t.Errorf("%s: counters, and only counters, end in _total", m.Name)
		}
	}
	slices.Sort(described)
	slices.Sort(listed)
	if !slices.Equal(described, listed) {
		t.Errorf("registered collectors describe %v\nMetrics() lists %v", described, listed)
	}
	for _, l := range [][]string{described, listed} {
		if len(slices.Compact(slices.Clone(l))) != len(l) {
			t.Errorf("duplicate names in %v", l)
		}
	}
}

// runSeries gathers controller-runtime's registry and returns the series of one run (labels
// namespace and name), keyed by family name (bpo_alignmentrun_state also by its state label).
func runSeries(t *testing.T, ns, name string) map[string]float64 {
	t.Helper()
	families, err := ctrlmetrics.Registry.Gather()
	must(t, err)
	out := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			if have["namespace"] != ns || have["name"] != name {
				continue
			}
			key := f.GetName()
			if s, ok := have["state"]; ok {
				key += "{" + s + "}"
			}
			switch {
			case m.Gauge != nil:
				out[key] = m.GetGauge().GetValue()
			case m.Counter != nil:
				out[key] = m.GetCounter().GetValue()
			}
		}
	}
	return out
}

// TestPhaseCompletedOnceDespiteStatusConflict: the PhaseCompleted event is queued with the status
// change that completes the phase. When that write conflicts, the event is dropped with it and
// queued again by the next reconcile; once written, later reconciles never repeat it. The same
// run shows status.state and the per-run series, which go when the run is deleted.
func TestPhaseCompletedOnceDespiteStatusConflict(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const ns = "fake-observability"
	run := testutil.MakeRun(ns, "once").Phases(1).Members(1).Defaulted()
	run.UID = types.UID("uid-once")
	f := newFakeRun(t, run)
	c, _, rec, _ := f.c, f.r, f.rec, f.req
	reconcile := func() { t.Helper(); f.reconcile(t) }
	var phaseEvents []string
	drain := func() {
		for len(rec.Events) > 0 {
			if e := <-rec.Events; strings.Contains(e, " PhaseCompleted ") {
				phaseEvents = append(phaseEvents, e)
			}
		}
	}

	reconcile()
	if st := getStatus(t, c, run); st.State != alignv1.StateRunning {
		t.Errorf("after the first Job: state %q, want Running", st.State)
	}
	if got := runSeries(t, ns, run.Name); got["bpo_alignmentrun_state{Running}"] != 1 || got["bpo_alignmentrun_phases"] != 1 || got["bpo_alignmentrun_phase"] != 0 {
		t.Errorf("series while running: %v", got)
	}
	for _, stage := range []string{alignv1.StageSample, alignv1.StageLabel, alignv1.StageTrain, alignv1.StageEval} {
		job := fakeJob(t, c, ns, JobName(run.Name, 1, stage, 0))
		must(t, testutil.SucceedJob(ctx, c, job, func(i int32) alignv1.StageResult { return fakeResult(stage, "1", i) }))
		if stage == alignv1.StageEval {
			f.conflict = true // the write that completes the phase (and the run) conflicts
		}
		reconcile()
	}
	drain()
	if len(phaseEvents) != 0 {
		t.Fatalf("PhaseCompleted emitted with a status that was not written: %v", phaseEvents)
	}
	if st := getStatus(t, c, run); st.State != alignv1.StateRunning {
		t.Errorf("after the conflict: state %q, want Running (nothing written)", st.State)
	}
	f.conflict = false
	for range 3 {
		reconcile()
	}
	drain()
	want := "Normal PhaseCompleted phase 1/1 completed: 7 pairs kept, 1 ties, loss 0.6, reward accuracy 0.5, KL to reference 0.01, KL to initial 0.2, win rate 0.6"
	if len(phaseEvents) != 1 || phaseEvents[0] != want {
		t.Errorf("PhaseCompleted events %q, want exactly one:\n%s", phaseEvents, want)
	}
	if st := getStatus(t, c, run); st.State != alignv1.StateSucceeded {
		t.Errorf("state %q, want Succeeded", st.State)
	}
	wantSeries := map[string]float64{
		"bpo_alignmentrun_state{Succeeded}": 1, "bpo_alignmentrun_phase": 1, "bpo_alignmentrun_phases": 1,
		"bpo_alignmentrun_pairs_sampled_total": 8, "bpo_alignmentrun_pairs_kept_total": 7, "bpo_alignmentrun_ties_total": 1,
		"bpo_alignmentrun_train_loss": 0.6, "bpo_alignmentrun_reward_accuracy": 0.5, "bpo_alignmentrun_kl_to_reference": 0.01,
		"bpo_alignmentrun_kl_to_initial": 0.2, "bpo_alignmentrun_win_rate": 0.6,
	}
	if got := runSeries(t, ns, run.Name); !mapsEqual(got, wantSeries) {
		t.Errorf("series of the finished run:\n got  %v\n want %v", got, wantSeries)
	}
	if v := metricValue(t, "bpo_alignmentruns", map[string]string{"namespace": ns, "state": "Succeeded"}); v != 1 {
		t.Errorf("bpo_alignmentruns{state=Succeeded} = %v, want 1", v)
	}

	// Deleted: its series go, and so does the namespace's count (no run left there).
	must(t, c.Delete(ctx, run))
	reconcile()
	if got := runSeries(t, ns, run.Name); len(got) != 0 {
		t.Errorf("series left after the run was deleted: %v", got)
	}
	if v := metricValue(t, "bpo_alignmentruns", map[string]string{"namespace": ns}); v != -1 {
		t.Errorf("bpo_alignmentruns of a namespace without runs = %v, want no series", v)
	}
}

func mapsEqual(a, b map[string]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// checkGatheredFamiliesListed: every bpo_ family the registry serves is in Metrics(), with the
// type it is served as.
func checkGatheredFamiliesListed(t *testing.T) {
	t.Helper()
	families, err := ctrlmetrics.Registry.Gather()
	must(t, err)
	listed := map[string]string{}
	for _, m := range Metrics() {
		listed[m.Name] = m.Type
	}
	for _, f := range families {
		if !strings.HasPrefix(f.GetName(), "bpo_") {
			continue
		}
		if want := strings.ToLower(f.GetType().String()); listed[f.GetName()] != want {
			t.Errorf("the registry serves %s as a %s; Metrics() lists it as %q", f.GetName(), want, listed[f.GetName()])
		}
	}
}
