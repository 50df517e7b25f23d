package controllers

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	alignv1 "github.com/bpo-dev/bpo/api/v1alpha1"
)

// Metrics of the AlignmentRun controller, registered on controller-runtime's registry (served
// on the manager's metrics endpoint). Label sets are bounded: no run names or uids.
var (
	runsByCondition = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "bpo_alignmentruns",
		Help: "Number of AlignmentRuns whose condition (Running, Suspended, Succeeded, Failed) is True, by namespace.",
	}, []string{"namespace", "condition"})

	phasesCompleted = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bpo_alignmentrun_phases_completed_total",
		Help: "Data-collection phases completed, by loss type and trust-region reference.",
	}, []string{"loss_type", "reference"})

	stageDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "bpo_alignmentrun_stage_duration_seconds",
		Help:    "Wall time of successful stage Jobs (Job startTime to completionTime), by stage.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 16), // 1 s .. ~9 h
	}, []string{"stage"})

	stageRetries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bpo_alignmentrun_stage_retries_total",
		Help: "Stage Jobs that failed and were replaced by a new attempt, by stage.",
	}, []string{"stage"})
)

func init() {
	metrics.Registry.MustRegister(runsByCondition, phasesCompleted, stageDuration, stageRetries)
}

// conditionTracker remembers which condition is True for every run this process has seen, so
// that the runsByCondition gauge can be recomputed without listing runs. A new leader rebuilds
// it as it reconciles every run at start-up.
type conditionTracker struct {
	mu   sync.Mutex
	runs map[types.NamespacedName]string
}

var tracker = &conditionTracker{runs: map[types.NamespacedName]string{}}

var trackedConditions = []string{
	alignv1.ConditionRunning, alignv1.ConditionSuspended, alignv1.ConditionSucceeded, alignv1.ConditionFailed,
}

// set records the True condition of a run ("" for none, or forget it on deletion) and updates
// the gauges of its namespace.
func (t *conditionTracker) set(key types.NamespacedName, condition string, deleted bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	old, had := t.runs[key]
	if deleted {
		delete(t.runs, key)
	} else {
		t.runs[key] = condition
	}
	if had && old == condition && !deleted {
		return
	}
	counts := map[string]float64{}
	for k, c := range t.runs {
		if k.Namespace == key.Namespace {
			counts[c]++
		}
	}
	for _, c := range trackedConditions {
		runsByCondition.WithLabelValues(key.Namespace, c).Set(counts[c])
	}
}
