// Package annotatortest serves, on any http.Handler host (httptest.NewServer in tests, or a
// small deployable test service), the remote annotators the annotator package speaks to: an
// OpenAI-compatible chat-completions judge with a deterministic rule, an OpenRLHF reward server
// and a vLLM pooling reward server, each with injectable faults (429 with Retry-After, 5xx,
// malformed bodies, unreadable verdicts, slow answers, a required bearer token) and request
// counters.
//
// The rule of all three is the built-in "sentiment" annotator: the judge prefers the response it
// scores higher (equal scores: "tie"), the reward servers return its score.
package annotatortest

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bpo-dev/bpo/trainer/annotator"
)

// Fault is what a server answers instead of its normal answer. The zero Fault is none.
type Fault struct {
	Status     int    // answer this status with Body (e.g. 429, 500, 503)
	RetryAfter string // the Retry-After header of that answer ("1", or an HTTP date)
	Body       string // the body of that answer
	Malformed  bool   // answer 200 with a body that is not JSON
	Answer     string // judge only: answer 200 with this text instead of the verdict
}

// FirstN injects f into the first n requests.
func FirstN(n int64, f Fault) func(int64) Fault {
	return func(i int64) Fault {
		if i <= n {
			return f
		}
		return Fault{}
	}
}

// Sentiment is the default rule: the "sentiment" annotator's score of a text.
func Sentiment() func(string) float64 {
	s := annotator.NewSentiment()
	return func(text string) float64 { return s.Score("", text) }
}

// sentiment is Sentiment, built once.
var sentiment = sync.OnceValue(Sentiment)

// Common is what the three servers share: a token, faults, a delay, counters.
type Common struct {
	// Token, if set, is required as "Authorization: Bearer <Token>" (else 401).
	Token string
	// Fault, if set, gives the fault of request n (1-based, counting every request).
	Fault func(n int64) Fault
	// Delay holds every answer back (the client hanging up ends it).
	Delay time.Duration

	requests, inFlight, maxInFlight atomic.Int64
}

// Requests is the number of requests received.
func (c *Common) Requests() int64 { return c.requests.Load() }

// MaxInFlight is the largest number of requests answered at once.
func (c *Common) MaxInFlight() int64 { return c.maxInFlight.Load() }

// begin counts the request, reads its body, applies the token, the delay and the fault. It
// returns the body and whether the handler should answer normally; end must be deferred.
func (c *Common) begin(w http.ResponseWriter, r *http.Request) (body []byte, fault Fault, ok bool) {
	n := c.requests.Add(1)
	cur := c.inFlight.Add(1)
	for {
		m := c.maxInFlight.Load()
		if cur <= m || c.maxInFlight.CompareAndSwap(m, cur) {
			break
		}
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, Fault{}, false
	}
	if r.Method != http.MethodPost {
		writeError(w, http.StatusMethodNotAllowed, "POST only")
		return nil, Fault{}, false
	}
	if c.Token != "" && r.Header.Get("Authorization") != "Bearer "+c.Token {
		writeError(w, http.StatusUnauthorized, "missing or wrong bearer token")
		return nil, Fault{}, false
	}
	if c.Delay > 0 {
		select {
		case <-r.Context().Done():
			return nil, Fault{}, false
		case <-time.After(c.Delay):
		}
	}
	if c.Fault != nil {
		fault = c.Fault(n)
	}
	switch {
	case fault.Status != 0:
		if fault.RetryAfter != "" {
			w.Header().Set("Retry-After", fault.RetryAfter)
		}
		writeError(w, fault.Status, fault.Body)
		return nil, fault, false
	case fault.Malformed:
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"id": "cut short`))
		return nil, fault, false
	}
	return body, fault, true
}

func (c *Common) end() { c.inFlight.Add(-1) }

// writeError answers in the OpenAI error shape, which vLLM uses too.
func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]any{"error": map[string]any{"message": msg, "type": http.StatusText(code), "code": code}})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// words counts whitespace-separated words: the servers' stand-in for tokens.
func words(s string) int64 { return int64(len(strings.Fields(s))) }
