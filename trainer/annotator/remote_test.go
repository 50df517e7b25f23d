package annotator

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

var oneItem = []Item{{"p", []string{"a", "bb"}}}

// TestRetryAfterIsHonoured: a 429 with Retry-After: 1 delays the retry by at least a second,
// although the backoff alone would wait a millisecond. (The one test that sleeps a second.)
func TestRetryAfterIsHonoured(t *testing.T) {
	var when []time.Time
	srv, calls, _ := lengthService(t, func(n int32) (int, string) {
		when = append(when, time.Now())
		return 0, ""
	})
	var first atomic.Bool
	limited := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !first.Swap(true) {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "slow down", http.StatusTooManyRequests)
			when = append(when, time.Now())
			return
		}
		srv.Config.Handler.ServeHTTP(w, r)
	}))
	defer limited.Close()
	h := &HTTP{URL: limited.URL, Backoff: time.Millisecond}
	if _, err := h.ScoreBatch(context.Background(), oneItem); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 1 || len(when) != 2 {
		t.Fatalf("%d answers, want a 429 then a score", len(when))
	}
	if waited := when[1].Sub(when[0]); waited < time.Second {
		t.Errorf("retried after %v, want at least the Retry-After of 1s", waited)
	}
	if got := h.Accounting().Requests; got != 2 {
		t.Errorf("Accounting().Requests = %d, want 2", got)
	}
}

func TestBackoff(t *testing.T) {
	header := func(code int, retryAfter string) *http.Response {
		r := &http.Response{StatusCode: code, Header: http.Header{}}
		if retryAfter != "" {
			r.Header.Set("Retry-After", retryAfter)
		}
		return r
	}
	lo, hi := 100*time.Millisecond, time.Second
	for _, c := range []struct {
		name     string
		n        int
		resp     *http.Response
		min, max time.Duration
	}{
		{"first retry", 0, nil, 50 * time.Millisecond, 100 * time.Millisecond},
		{"third retry", 2, header(500, ""), 200 * time.Millisecond, 400 * time.Millisecond},
		{"capped", 10, header(502, ""), 500 * time.Millisecond, time.Second},
		{"huge n", 200, nil, 500 * time.Millisecond, time.Second},
		{"429 Retry-After seconds", 0, header(429, "7"), 7 * time.Second, 7 * time.Second},
		{"503 Retry-After beyond the cap", 0, header(503, "120"), 120 * time.Second, 120 * time.Second},
		{"500 ignores Retry-After", 0, header(500, "7"), 50 * time.Millisecond, 100 * time.Millisecond},
		{"unparseable Retry-After", 0, header(429, "soon"), 100 * time.Millisecond, 100 * time.Millisecond},
	} {
		for range 50 {
			if d := backoff(lo, hi, c.n, c.resp); d < c.min || d > c.max {
				t.Fatalf("%s: backoff %v, want within [%v, %v]", c.name, d, c.min, c.max)
			}
		}
	}
	// Jitter: not every draw is the same.
	seen := map[time.Duration]bool{}
	for range 20 {
		seen[backoff(lo, hi, 3, nil)] = true
	}
	if len(seen) < 2 {
		t.Errorf("20 backoffs all equal %v: no jitter", seen)
	}
}

// TestTokenNeverInErrors: a service that echoes the Authorization header in its error
// messages (permanent, exhausted retries) cannot leak the token through the error.
func TestTokenNeverInErrors(t *testing.T) {
	const token = "tok-3f9a-very-secret"
	for _, code := range []int{http.StatusBadRequest, http.StatusInternalServerError} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "bad credentials: "+r.Header.Get("Authorization"), code)
		}))
		h := &HTTP{URL: srv.URL, Token: token, Attempts: 2, Backoff: time.Millisecond}
		_, err := h.ScoreBatch(context.Background(), oneItem)
		srv.Close()
		if err == nil {
			t.Fatalf("HTTP %d: no error", code)
		}
		if strings.Contains(err.Error(), token) || !strings.Contains(err.Error(), "Bearer [redacted]") {
			t.Errorf("HTTP %d: error %q", code, err)
		}
	}
	// The answer is 200 but malformed, and quotes the token.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("<html>" + r.Header.Get("Authorization") + "</html>"))
	}))
	defer srv.Close()
	_, err := (&HTTP{URL: srv.URL, Token: token}).ScoreBatch(context.Background(), oneItem)
	if err == nil || strings.Contains(err.Error(), token) {
		t.Errorf("malformed answer: error %v", err)
	}
}

func TestConnectionErrorsAreRetried(t *testing.T) {
	// A listener that accepts and closes at once: every attempt is a connection error.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	defer ln.Close()
	h := &HTTP{URL: "http://" + ln.Addr().String(), Attempts: 3, Backoff: time.Millisecond}
	_, err = h.ScoreBatch(context.Background(), oneItem)
	if err == nil || !strings.Contains(err.Error(), "3 attempts failed, the last: Post") {
		t.Errorf("err %v", err)
	}
	if accepted.Load() != 3 {
		t.Errorf("%d connections, want 3", accepted.Load())
	}
}

// TestAnswerCutHalfWayIsRetried: reading the body is part of the attempt.
func TestAnswerCutHalfWayIsRetried(t *testing.T) {
	srv, calls, _ := lengthService(t, nil)
	var n atomic.Int32
	cutting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			w.Header().Set("Content-Length", "100")
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write([]byte(`{"scores": [[1,`))
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
			return
		}
		srv.Config.Handler.ServeHTTP(w, r)
	}))
	defer cutting.Close()
	got, err := (&HTTP{URL: cutting.URL, Backoff: time.Millisecond}).ScoreBatch(context.Background(), oneItem)
	if err != nil || len(got) != 1 || got[0][1] != 2 {
		t.Fatalf("%v, %v", got, err)
	}
	if n.Load() != 2 || calls.Load() != 1 {
		t.Errorf("%d requests, want the cut one and one more", n.Load())
	}
}

// TestTimeoutIsPerAttempt: a slow first answer times out and the retry succeeds.
func TestTimeoutIsPerAttempt(t *testing.T) {
	srv, _, _ := lengthService(t, nil)
	var n atomic.Int32
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			_, _ = io.Copy(io.Discard, r.Body) // then the server notices the client hanging up
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
			return
		}
		srv.Config.Handler.ServeHTTP(w, r)
	}))
	defer slow.Close()
	start := time.Now()
	_, err := (&HTTP{URL: slow.URL, Timeout: 50 * time.Millisecond, Backoff: time.Millisecond}).ScoreBatch(context.Background(), oneItem)
	if err != nil {
		t.Fatal(err)
	}
	if n.Load() != 2 || time.Since(start) > 2*time.Second {
		t.Errorf("%d requests in %v", n.Load(), time.Since(start))
	}
}

// TestContextEndsRetries: cancelling the caller's context ends a Retry-After wait at once.
func TestContextEndsRetries(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "30")
		http.Error(w, "busy", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := (&HTTP{URL: srv.URL}).ScoreBatch(ctx, oneItem)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err %v, want the context's deadline", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Errorf("returned after %v", time.Since(start))
	}
}

func TestHTTPBudget(t *testing.T) {
	srv, calls, _ := lengthService(t, nil)
	h := &HTTP{URL: srv.URL, BatchSize: 1, Limits: Limits{MaxRequests: 2}}
	_, err := h.ScoreBatch(context.Background(), []Item{oneItem[0], oneItem[0], oneItem[0]})
	if !errors.Is(err, ErrBudgetExceeded) {
		t.Fatalf("err %v, want ErrBudgetExceeded", err)
	}
	if !strings.Contains(err.Error(), "2 requests sent, limit MaxRequests is 2; raise MaxRequests") {
		t.Errorf("error %q does not name the limit and the field to raise", err)
	}
	if calls.Load() != 2 {
		t.Errorf("%d requests, want 2", calls.Load())
	}
	// A limit HTTP cannot apply is refused rather than ignored.
	_, err = (&HTTP{URL: srv.URL, Limits: Limits{MaxTokens: 10}}).ScoreBatch(context.Background(), oneItem)
	if err == nil || !strings.Contains(err.Error(), "MaxTokens cannot apply") {
		t.Errorf("err %v", err)
	}
	_, err = (&HTTP{URL: srv.URL, Limits: Limits{MaxConcurrency: -1}}).ScoreBatch(context.Background(), oneItem)
	if err == nil || !strings.Contains(err.Error(), "limits.MaxConcurrency is -1") {
		t.Errorf("err %v", err)
	}
}

// TestRequestsPerMinute: 5 requests at 1200 a minute are spaced 50ms apart.
func TestRequestsPerMinute(t *testing.T) {
	srv, _, _ := lengthService(t, nil)
	h := &HTTP{URL: srv.URL, BatchSize: 1, Limits: Limits{RequestsPerMinute: 1200}}
	start := time.Now()
	if _, err := h.ScoreBatch(context.Background(), []Item{oneItem[0], oneItem[0], oneItem[0], oneItem[0], oneItem[0]}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 190*time.Millisecond {
		t.Errorf("5 requests at 1200/min took %v, want at least 200ms", d)
	}
}
