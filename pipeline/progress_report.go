package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/stage/contract"
)

// ProgressReporter posts a stage pod's progress to the manager (docs/design.md, "Live
// progress"): the newest update at most every Interval, from a goroutine of its own, so that a
// slow or absent manager never slows the stage. Reporting is best effort: a failed post is noted
// in the log (once per minute at most) and the stage goes on.
type ProgressReporter struct {
	URL       string
	TokenFile string
	Interval  time.Duration
	Client    *http.Client
	Log       io.Writer

	mu       sync.Mutex
	last     time.Time // when the last update was queued
	started  time.Time // when the current (stage, total) began: the rate's start
	key      string
	pending  chan v1alpha1.ProgressReport
	loggedAt time.Time
	once     sync.Once
}

// progressInterval is how often a pod reports: often enough for a live ETA, rarely enough that
// a thousand pods cost the manager little.
const progressInterval = 3 * time.Second

// ProgressFromEnv returns a reporter to $BPO_PROGRESS_URL with the token in
// $BPO_PROGRESS_TOKEN_FILE, or nil when the pod was given no progress endpoint.
func ProgressFromEnv(log io.Writer) *ProgressReporter {
	url := os.Getenv(contract.EnvProgressURL)
	if url == "" {
		return nil
	}
	tokenFile := os.Getenv(contract.EnvProgressTokenFile)
	if tokenFile == "" {
		tokenFile = contract.ProgressTokenFile
	}
	return &ProgressReporter{URL: strings.TrimSuffix(url, "/") + contract.ProgressPath, TokenFile: tokenFile, Log: log}
}

// Update is a Progress: it queues the update when Interval has passed since the last one, or
// when the work it counts is done; otherwise it drops it (a newer one follows).
func (r *ProgressReporter) Update(u ProgressUpdate) {
	r.once.Do(r.start)
	now := time.Now()
	r.mu.Lock()
	key := fmt.Sprintf("%s/%d", u.Stage, u.Total)
	if key != r.key {
		r.key, r.started = key, now
	}
	due := now.Sub(r.last) >= r.interval() || u.Done >= u.Total
	if !due {
		r.mu.Unlock()
		return
	}
	r.last = now
	rep := v1alpha1.ProgressReport{Stage: u.Stage, Done: int64(u.Done), Total: int64(u.Total), ElapsedSeconds: now.Sub(r.started).Seconds()}
	for k, v := range u.Metrics {
		if rep.Metrics == nil {
			rep.Metrics = map[string]float64{}
		}
		if len(rep.Metrics) < v1alpha1.MaxProgressMetrics {
			rep.Metrics[k] = v
		}
	}
	r.mu.Unlock()
	select { // the newest update replaces one not yet sent
	case <-r.pending:
	default:
	}
	select {
	case r.pending <- rep:
	default:
	}
}

func (r *ProgressReporter) interval() time.Duration {
	if r.Interval > 0 {
		return r.Interval
	}
	return progressInterval
}

func (r *ProgressReporter) start() {
	r.pending = make(chan v1alpha1.ProgressReport, 1)
	go func() {
		for rep := range r.pending {
			if err := r.post(rep); err != nil {
				r.note(err)
			}
		}
	}()
}

// post sends one report with the pod's token, read on every post (the kubelet renews it).
func (r *ProgressReporter) post(rep v1alpha1.ProgressReport) error {
	token, err := os.ReadFile(r.TokenFile)
	if err != nil {
		return fmt.Errorf("progress token: %w", err)
	}
	body, err := json.Marshal(rep)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	client := r.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}

// note logs a failed post, at most once a minute; the token never reaches the log (errors from
// net/http and the server's answers do not contain it).
func (r *ProgressReporter) note(err error) {
	if r.Log == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.loggedAt) < time.Minute {
		return
	}
	r.loggedAt = time.Now()
	fmt.Fprintf(r.Log, "bpo: progress report to %s failed (the stage goes on): %v\n", r.URL, err)
}
