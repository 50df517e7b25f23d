package serve

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// gate holds every decode step until released, and tells when a step is waiting.
type gate struct {
	entered chan struct{}
	release chan struct{}
}

func newGate() *gate { return &gate{entered: make(chan struct{}, 1), release: make(chan struct{})} }

func (g *gate) hook() {
	select {
	case g.entered <- struct{}{}:
	default:
	}
	<-g.release
}

func longRequest(seed int64) openai.CompletionNewParams {
	return openai.CompletionNewParams{Model: "tiny-reviews", Prompt: strPrompt("The food was"), MaxTokens: openai.Int(6), Seed: openai.Int(seed)}
}

// TestQueueFull: with one batch row and a queue of one, a third request while the first runs and
// the second waits is answered 429 with an OpenAI error body; the others complete.
func TestQueueFull(t *testing.T) {
	g := newGate()
	ts := startServer(t, Options{MaxBatch: 1, MaxQueue: 1}, g.hook)
	results := make(chan error, 2)
	send := func(seed int64) {
		_, err := ts.client.Completions.New(context.Background(), longRequest(seed))
		results <- err
	}
	go send(1)
	<-g.entered // the first request runs (and holds the only batch row)
	go send(2)
	waitFor(t, "the second request to queue", func() bool { return ts.s.queuedNow() == 1 })
	_, err := ts.client.Completions.New(context.Background(), longRequest(3))
	var ae *openai.Error
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusTooManyRequests || ae.Code != "queue_full" || ae.Type != "rate_limit_error" ||
		!strings.Contains(ae.Message, "queue is full") || ae.Response.Header.Get("Retry-After") == "" {
		t.Fatalf("third request: %v %s", err, apiErrorBody(err))
	}
	close(g.release)
	for i := 0; i < 2; i++ {
		if err := <-results; err != nil {
			t.Fatalf("a queued request failed: %v", err)
		}
	}
	_, metrics := ts.get(t, "/metrics")
	if !strings.Contains(string(metrics), `bpo_serve_requests_total{code="429",endpoint="completions"} 1`) {
		t.Errorf("/metrics does not count the 429:\n%s", grep(string(metrics), "bpo_serve_requests_total"))
	}
}

// TestBatchingAndDeterminism: requests that arrive together share decode steps (the batch-rows
// histogram sees steps of several rows), and a seeded request's choices do not depend on what
// else is in the batch.
func TestBatchingAndDeterminism(t *testing.T) {
	alone := startServer(t, Options{}, nil)
	want := make([]string, 4)
	for i := range want {
		want[i] = alone.complete(t, longRequest(int64(i))).Choices[0].Text
	}
	g := newGate()
	ts := startServer(t, Options{MaxBatch: 8}, g.hook)
	got := make([]string, 4)
	var wg sync.WaitGroup
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := ts.client.Completions.New(context.Background(), longRequest(int64(i)))
			if err != nil {
				t.Errorf("request %d: %v", i, err)
				return
			}
			got[i] = c.Choices[0].Text
		}()
	}
	<-g.entered
	// Let the other requests arrive; they are admitted at the next step.
	waitFor(t, "all requests to arrive", func() bool {
		_, m := ts.get(t, "/metrics")
		return metricValue(string(m), "bpo_serve_prompt_tokens_total") == 4*float64(len("The food was"))
	})
	close(g.release)
	wg.Wait()
	for i := range got {
		if got[i] != want[i] {
			t.Errorf("request %d in a batch: %q, alone: %q", i, got[i], want[i])
		}
	}
	_, m := ts.get(t, "/metrics")
	sum, count := metricValue(string(m), "bpo_serve_decode_batch_rows_sum"), metricValue(string(m), "bpo_serve_decode_batch_rows_count")
	if count == 0 || sum/count < 2 {
		t.Fatalf("decode steps averaged %g rows (%g steps): requests were not batched", sum/count, count)
	}
	t.Logf("%g decode steps, %.2f rows each", count, sum/count)
}

func TestShutdownAndNotReady(t *testing.T) {
	ts := startServer(t, Options{}, nil)
	if code, _ := ts.get(t, "/health"); code != 200 {
		t.Fatalf("/health %d while serving", code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ts.s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	_, err := ts.client.Completions.New(context.Background(), longRequest(1))
	var ae *openai.Error
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusServiceUnavailable || ae.Code != "shutting_down" {
		t.Fatalf("completion while shutting down: %v %s", err, apiErrorBody(err))
	}
	if code, body := ts.get(t, "/health"); code != 503 || deref(errorOf(t, body).Code) != "shutting_down" {
		t.Fatalf("/health while shutting down: %d %s", code, body)
	}

	// Before Load: 503 not_ready.
	s, err := New(Options{ModelDir: tinyDir})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.Handler())
	defer hs.Close()
	c := openai.NewClient(option.WithBaseURL(hs.URL+"/v1/"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
	_, err = c.Completions.New(context.Background(), longRequest(1))
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusServiceUnavailable || ae.Code != "not_ready" {
		t.Fatalf("completion before Load: %v %s", err, apiErrorBody(err))
	}
}

// TestShutdownWaitsForRequests: a request accepted before Shutdown completes.
func TestShutdownWaitsForRequests(t *testing.T) {
	g := newGate()
	ts := startServer(t, Options{}, g.hook)
	done := make(chan error, 1)
	go func() {
		_, err := ts.client.Completions.New(context.Background(), longRequest(1))
		done <- err
	}()
	<-g.entered
	shut := make(chan error, 1)
	go func() { shut <- ts.s.Shutdown(context.Background()) }()
	waitFor(t, "draining", func() bool { code, _ := ts.get(t, "/health"); return code == 503 })
	close(g.release)
	if err := <-done; err != nil {
		t.Fatalf("accepted request: %v", err)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
}

// TestBadRequests: each bad field gets a 400 whose param names it.
func TestBadRequests(t *testing.T) {
	ts := startServer(t, Options{}, nil)
	ok := `"model": "tiny-reviews", "prompt": "Hi"`
	for _, c := range []struct {
		body, param, contains string
		status                int
	}{
		{`{"prompt": "Hi"}`, "model", "model is required", 400},
		{`{"model": "nope", "prompt": "Hi"}`, "model", `the model "nope" does not exist`, 404},
		{`{"model": "tiny-reviews"}`, "prompt", "prompt is required", 400},
		{`{"model": "tiny-reviews", "prompt": ""}`, "prompt", "prompt 0 is empty", 400},
		{`{"model": "tiny-reviews", "prompt": []}`, "prompt", "empty array", 400},
		{`{"model": "tiny-reviews", "prompt": [1, 300]}`, "prompt", "token id 300 is outside the vocabulary [0, 257)", 400},
		{`{"model": "tiny-reviews", "prompt": {"a": 1}}`, "prompt", "prompt must be a string", 400},
		{`{` + ok + `, "max_tokens": -1}`, "max_tokens", "max_tokens must be >= 0", 400},
		{`{` + ok + `, "max_tokens": 127}`, "max_tokens", "maximum context length is 128 tokens", 400},
		{`{` + ok + `, "temperature": 2.5}`, "temperature", "temperature must be in [0, 2]", 400},
		{`{` + ok + `, "top_p": 0}`, "top_p", "top_p must be in (0, 1]", 400},
		{`{` + ok + `, "n": 0}`, "n", "n must be >= 1", 400},
		{`{` + ok + `, "n": 200}`, "n", "more than the 128 one request may ask for", 400},
		{`{` + ok + `, "n": "two"}`, "n", "n: got a JSON string, want a number", 400},
		{`{` + ok + `, "logprobs": 21}`, "logprobs", "logprobs must be in [0, 20]", 400},
		{`{` + ok + `, "stop": ["a", ""]}`, "stop", "stop sequence 1 is empty", 400},
		{`{` + ok + `, "stop": ["a", "b", "c", "d", "e"]}`, "stop", "at most 4", 400},
		{`{` + ok + `, "stream": true}`, "stream", "streaming is not supported", 400},
		{`{` + ok + `, "best_of": 3}`, "best_of", "best_of other than n", 400},
		{`{` + ok + `, "presence_penalty": 0.5}`, "presence_penalty", "not supported", 400},
		{`{` + ok + `, "frequency_penalty": 0.5}`, "frequency_penalty", "not supported", 400},
		{`{` + ok + `, "logit_bias": {"1": 2}}`, "logit_bias", "not supported", 400},
		{`{` + ok + `, "suffix": "x"}`, "suffix", "not supported", 400},
		{`{` + ok, "", "not valid JSON", 400},
	} {
		code, body := ts.post(t, "/v1/completions", c.body)
		e := errorOf(t, body)
		if code != c.status || deref(e.Param) != c.param || !strings.Contains(e.Message, c.contains) {
			t.Errorf("%s: %d %s, want %d param %q containing %q", c.body, code, body, c.status, c.param, c.contains)
		}
	}
	// Through the official client: the error's param names the field.
	_, err := ts.client.Completions.New(context.Background(), openai.CompletionNewParams{
		Model: "tiny-reviews", Prompt: strPrompt("Hi"), Temperature: openai.Float(3)})
	var ae *openai.Error
	if !errors.As(err, &ae) || ae.StatusCode != 400 || ae.Param != "temperature" || ae.Type != "invalid_request_error" {
		t.Fatalf("client: %v %s", err, apiErrorBody(err))
	}
	if code, body := ts.get(t, "/v1/chat/completions"); code != 404 || !strings.Contains(errorOf(t, body).Message, "POST /v1/completions") {
		t.Errorf("unknown endpoint: %d %s", code, body)
	}
}

// metricValue reads one unlabelled sample from Prometheus text.
func metricValue(text, name string) float64 {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(text)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

func grep(text, prefix string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
