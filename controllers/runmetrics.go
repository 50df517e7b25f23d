package controllers

import (
	"cmp"
	"slices"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"

	alignv1 "github.com/bpo-dev/bpo/api/v1alpha1"
)

// Per-run metrics come from what the stages reported, already folded into status.phaseResults:
// the controller keeps one runSample per run it has reconciled and exposes it at scrape time.
// Their labels are namespace and name only, so the series are bounded by the runs that exist;
// a deleted run's series go with it (no stale series), and a new leader rebuilds them all as it
// reconciles every run at start-up.

// runSample is what the metrics show of one run, read from its status by sampleRun.
type runSample struct {
	state              alignv1.RunState
	phasesDone, phases int64
	// Sums over the phases (monotone: a phase's counts are final once its stage completed).
	pairsSampled, pairsKept, ties int64
	// The newest values reported (nil: none yet).
	loss, rewardAccuracy, klToReference, klToInitial, winRate, baselineWinRate *float64
	// The running stage's live progress (status.stageProgress; nil between stages).
	stageProgress, stageRate *float64
}

// sampleRun reads a run's metrics from its status (pure).
func sampleRun(st *alignv1.AlignmentRunStatus) runSample {
	s := runSample{state: st.State, phases: int64(st.Phases)}
	if s.state == "" {
		s.state = alignv1.StateOf(st.Conditions)
	}
	prs := slices.Clone(st.PhaseResults)
	slices.SortFunc(prs, func(a, b alignv1.PhaseResult) int { return cmp.Compare(a.Phase, b.Phase) })
	newest := func(dst **float64, v string) {
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			*dst = &f
		}
	}
	for i := range prs {
		pr := &prs[i]
		if pr.CompletionTime != nil && pr.Phase > 0 {
			s.phasesDone++ // phase 0, the baseline, is not a data-collection phase
		}
		s.pairsSampled += pr.PairsSampled
		s.pairsKept += pr.PairsKept
		s.ties += pr.Ties
		newest(&s.loss, pr.Loss)
		newest(&s.rewardAccuracy, pr.RewardAccuracy)
		newest(&s.klToReference, pr.KLToReference)
		newest(&s.klToInitial, pr.KLToInitial)
	}
	newest(&s.winRate, st.LatestWinRate)
	newest(&s.baselineWinRate, st.BaselineWinRate)
	if p := st.StageProgress; p != nil && p.Total > 0 {
		r := float64(p.Done) / float64(p.Total)
		s.stageProgress = &r
		newest(&s.stageRate, p.Rate)
	}
	return s
}

// perRunFamily is a per-run metric (labels namespace, name) and how to read it from a sample.
type perRunFamily struct {
	MetricFamily
	value func(*runSample) *float64
}

func num(n int64) *float64 { f := float64(n); return &f }

var perRunFamilies = []perRunFamily{
	{perRun("bpo_alignmentrun_phase", TypeGauge, "Phases of the run completed so far (0..F)."),
		func(s *runSample) *float64 { return num(s.phasesDone) }},
	{perRun("bpo_alignmentrun_phases", TypeGauge, "F, the run's number of data-collection phases."),
		func(s *runSample) *float64 { return num(s.phases) }},
	{perRun("bpo_alignmentrun_pairs_sampled_total", TypeCounter, "Candidate pairs sampled (prompts whose samples differ), summed over the run's phases."),
		func(s *runSample) *float64 { return num(s.pairsSampled) }},
	{perRun("bpo_alignmentrun_pairs_kept_total", TypeCounter, "Labelled pairs kept for training, summed over the run's phases."),
		func(s *runSample) *float64 { return num(s.pairsKept) }},
	{perRun("bpo_alignmentrun_ties_total", TypeCounter, "Pairs the annotator scored equal (dropped), summed over the run's phases."),
		func(s *runSample) *float64 { return num(s.ties) }},
	{perRun("bpo_alignmentrun_train_loss", TypeGauge, "DAP loss of the newest trained phase (mean over ensemble members)."),
		func(s *runSample) *float64 { return s.loss }},
	{perRun("bpo_alignmentrun_reward_accuracy", TypeGauge, "Implicit-reward accuracy of the newest trained phase."),
		func(s *runSample) *float64 { return s.rewardAccuracy }},
	{perRun("bpo_alignmentrun_kl_to_reference", TypeGauge, "KL estimate of the learner to the phase's reference model, newest trained phase."),
		func(s *runSample) *float64 { return s.klToReference }},
	{perRun("bpo_alignmentrun_kl_to_initial", TypeGauge, "KL estimate to the initial model, newest phase (from eval when evaluated, else train)."),
		func(s *runSample) *float64 { return s.klToInitial }},
	{perRun("bpo_alignmentrun_win_rate", TypeGauge, "Win rate of the run's newest evaluation (status.latestWinRate)."),
		func(s *runSample) *float64 { return s.winRate }},
	{perRun("bpo_alignmentrun_baseline_win_rate", TypeGauge, "Win rate of the initial model, the phase-0 evaluation (status.baselineWinRate)."),
		func(s *runSample) *float64 { return s.baselineWinRate }},
	{perRun("bpo_alignmentrun_stage_progress_ratio", TypeGauge, "Fraction of the running stage done, as its pods report it (status.stageProgress)."),
		func(s *runSample) *float64 { return s.stageProgress }},
	{perRun("bpo_alignmentrun_stage_units_per_second", TypeGauge, "Rate of the running stage in its units (rows, optimizer steps, prompts) per second, summed over its pods."),
		func(s *runSample) *float64 { return s.stageRate }},
}

func perRun(name, typ, help string) MetricFamily {
	return MetricFamily{Name: name, Type: typ, Labels: []string{"namespace", "name"}, Help: help}
}

// runTracker holds the sample of every run this process has reconciled and is the Prometheus
// collector of the per-run families and of the runs-by-state gauge.
type runTracker struct {
	mu   sync.Mutex
	runs map[types.NamespacedName]runSample

	runsDesc, stateDesc *prometheus.Desc
	perRunDescs         []*prometheus.Desc
}

func newRunTracker() *runTracker {
	desc := func(f MetricFamily) *prometheus.Desc { return prometheus.NewDesc(f.Name, f.Help, f.Labels, nil) }
	t := &runTracker{
		runs:      map[types.NamespacedName]runSample{},
		runsDesc:  desc(runsFamily),
		stateDesc: desc(runStateFamily),
	}
	for _, f := range perRunFamilies {
		t.perRunDescs = append(t.perRunDescs, desc(f.MetricFamily))
	}
	return t
}

var tracker = newRunTracker()

// set records a run's sample after a successful reconcile.
func (t *runTracker) set(key types.NamespacedName, s runSample) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.runs[key] = s
}

// forget drops a deleted run, and with it its series.
func (t *runTracker) forget(key types.NamespacedName) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.runs, key)
}

func (t *runTracker) Describe(ch chan<- *prometheus.Desc) {
	ch <- t.runsDesc
	ch <- t.stateDesc
	for _, d := range t.perRunDescs {
		ch <- d
	}
}

func (t *runTracker) Collect(ch chan<- prometheus.Metric) {
	t.mu.Lock()
	defer t.mu.Unlock()
	byNamespace := map[string]map[alignv1.RunState]int{}
	for key, s := range t.runs {
		if byNamespace[key.Namespace] == nil {
			byNamespace[key.Namespace] = map[alignv1.RunState]int{}
		}
		byNamespace[key.Namespace][s.state]++
		ch <- prometheus.MustNewConstMetric(t.stateDesc, prometheus.GaugeValue, 1, key.Namespace, key.Name, string(s.state))
		for i, f := range perRunFamilies {
			v := f.value(&s)
			if v == nil {
				continue
			}
			vt := prometheus.GaugeValue
			if f.Type == TypeCounter {
				vt = prometheus.CounterValue
			}
			ch <- prometheus.MustNewConstMetric(t.perRunDescs[i], vt, *v, key.Namespace, key.Name)
		}
	}
	// Every state of a namespace that has runs, zeros included, so sums and graphs have no gaps.
	for ns, counts := range byNamespace {
		for _, st := range alignv1.RunStates {
			ch <- prometheus.MustNewConstMetric(t.runsDesc, prometheus.GaugeValue, float64(counts[st]), ns, string(st))
		}
	}
}
