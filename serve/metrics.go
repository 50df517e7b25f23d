package serve

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the server's Prometheus series, on a registry of its own (two servers in one
// process, as in tests, do not collide).
type metrics struct {
	reg          *prometheus.Registry
	requests     *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	queued       prometheus.Gauge
	runningRows  *prometheus.GaugeVec
	batchRows    prometheus.Histogram
	generated    prometheus.Counter
	promptTokens prometheus.Counter
	adapters     prometheus.Gauge
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bpo_serve_requests_total", Help: "HTTP requests by endpoint and status code.",
		}, []string{"endpoint", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "bpo_serve_request_duration_seconds", Help: "Time from request to response, by endpoint.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, []string{"endpoint"}),
		queued: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bpo_serve_queue_requests", Help: "Completion requests waiting for a batch slot (bounded by --max-queue; a full queue answers 429).",
		}),
		runningRows: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "bpo_serve_running_rows", Help: "Choices being decoded, by served model.",
		}, []string{"model"}),
		batchRows: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "bpo_serve_decode_batch_rows", Help: "Rows fed to one batched decode step.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128},
		}),
		generated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bpo_serve_generation_tokens_total", Help: "Tokens generated (end-of-text excluded).",
		}),
		promptTokens: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bpo_serve_prompt_tokens_total", Help: "Prompt tokens of accepted completion requests.",
		}),
		adapters: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bpo_serve_lora_adapters", Help: "LoRA adapters loaded.",
		}),
	}
	m.reg.MustRegister(m.requests, m.duration, m.queued, m.runningRows, m.batchRows, m.generated, m.promptTokens, m.adapters,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// statusRecorder remembers the status a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

// instrument counts and times the requests of one endpoint.
func (m *metrics) instrument(endpoint string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		h(rec, r)
		m.requests.WithLabelValues(endpoint, strconv.Itoa(rec.status)).Inc()
		m.duration.WithLabelValues(endpoint).Observe(time.Since(start).Seconds())
	}
}
