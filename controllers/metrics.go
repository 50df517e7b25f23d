package controllers

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// MetricFamily describes one metric family the controller exports on controller-runtime's
// registry (the manager's metrics endpoint). Metrics lists them all: docs/observability.md and
// the chart's Grafana dashboard are checked against it (test/chart), so a query can only name a
// metric that exists.
type MetricFamily struct {
	Name string
	// Type is gauge, counter or histogram (a histogram's series add _bucket, _sum and _count).
	Type   string
	Labels []string
	Help   string
}

// Metric types, as Prometheus names them.
const (
	TypeGauge     = "gauge"
	TypeCounter   = "counter"
	TypeHistogram = "histogram"
)

// Aggregate families: labels are bounded (namespace, state, stage, loss type, reference).
var (
	runsFamily = MetricFamily{"bpo_alignmentruns", TypeGauge, []string{"namespace", "state"},
		"Number of AlignmentRuns by namespace and status.state (Pending, Running, Suspended, Succeeded, Failed)."}
	phasesCompletedFamily = MetricFamily{"bpo_alignmentrun_phases_completed_total", TypeCounter, []string{"loss_type", "reference"},
		"Data-collection phases completed, by loss type and trust-region reference."}
	stageDurationFamily = MetricFamily{"bpo_alignmentrun_stage_duration_seconds", TypeHistogram, []string{"stage"},
		"Wall time of successful stage Jobs (Job startTime to completionTime), by stage."}
	stageRetriesFamily = MetricFamily{"bpo_alignmentrun_stage_retries_total", TypeCounter, []string{"stage"},
		"Stage Jobs that failed and were replaced by a new attempt, by stage."}
	runStateFamily = MetricFamily{"bpo_alignmentrun_state", TypeGauge, []string{"namespace", "name", "state"},
		"1 for the run's status.state (one series per run)."}
)

var (
	phasesCompleted = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: phasesCompletedFamily.Name, Help: phasesCompletedFamily.Help,
	}, phasesCompletedFamily.Labels)

	stageDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: stageDurationFamily.Name, Help: stageDurationFamily.Help,
		Buckets: prometheus.ExponentialBuckets(1, 2, 16), // 1 s .. ~9 h
	}, stageDurationFamily.Labels)

	stageRetries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: stageRetriesFamily.Name, Help: stageRetriesFamily.Help,
	}, stageRetriesFamily.Labels)
)

// collectors is everything registered, in one place (see TestMetricsListed).
var collectors = []prometheus.Collector{tracker, phasesCompleted, stageDuration, stageRetries}

func init() {
	metrics.Registry.MustRegister(collectors...)
}

// Metrics lists every metric family the controller registers.
func Metrics() []MetricFamily {
	out := []MetricFamily{runsFamily, runStateFamily, phasesCompletedFamily, stageDurationFamily, stageRetriesFamily}
	for _, f := range perRunFamilies {
		out = append(out, f.MetricFamily)
	}
	return out
}
