package annotator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Item is one prompt with the responses to score.
type Item struct {
	Prompt    string   `json:"prompt"`
	Responses []string `json:"responses"`
}

// BatchScorer scores many items at once: scores[i][j] is item i's response j. Unlike Scorer
// it can fail (a remote service), and it sees whole batches (one request per batch).
type BatchScorer interface {
	Name() string
	ScoreBatch(ctx context.Context, items []Item) ([][]float64, error)
}

// Batch adapts an in-process Scorer to BatchScorer; it never fails.
func Batch(s Scorer) BatchScorer { return batched{s} }

type batched struct{ Scorer }

func (b batched) ScoreBatch(_ context.Context, items []Item) ([][]float64, error) {
	out := make([][]float64, len(items))
	for i, it := range items {
		out[i] = make([]float64, len(it.Responses))
		for j, r := range it.Responses {
			out[i][j] = b.Score(it.Prompt, r)
		}
	}
	return out, nil
}

// HTTP scores through an external service that speaks this package's own protocol:
//
//	POST <URL>   Content-Type: application/json   [Authorization: Bearer <Token>]
//	{"items": [{"prompt": "...", "responses": ["...", "..."]}, ...]}
//	-> 200 {"scores": [[0.7, -0.2], ...]}   one finite number per response, same shape
//
// Text goes as JSON strings, so bytes that are not valid UTF-8 (a byte-level model can emit
// them) arrive as U+FFFD, one per byte: the service scores that text (see ValidUTF8).
// Requests carry at most BatchSize items, one at a time. Connection errors, 429 and 5xx are
// retried (see Retry); any other status fails at once with the service's message.
type HTTP struct {
	URL       string
	Token     string
	Client    *http.Client  // default: a plain client (its Timeout, if set, also bounds each request)
	BatchSize int           // default 64
	Attempts  int           // default 4 (0 or less: the default)
	Backoff   time.Duration // first retry delay, doubled each time (jittered); default 1s
	Timeout   time.Duration // per request; default 60s
	Limits    Limits        // rate and budget (MaxTokens and TokensPerMinute do not apply: no usage)

	once   sync.Once
	remote *remote
	err    error
	ledger ledger
}

func (h *HTTP) Name() string { return "http:" + h.URL }

// Accounting is what h has spent so far (Requests).
func (h *HTTP) Accounting() Accounting { return h.ledger.get() }

type httpRequest struct {
	Items []Item `json:"items"`
}

type httpResponse struct {
	Scores [][]float64 `json:"scores"`
}

// ScoreBatch scores items in requests of BatchSize.
func (h *HTTP) ScoreBatch(ctx context.Context, items []Item) ([][]float64, error) {
	h.once.Do(func() {
		if h.Limits.usesTokens() {
			h.err = errors.New("limits: the HTTP protocol reports no token usage, so TokensPerMinute and MaxTokens cannot apply; set MaxRequests or RequestsPerMinute instead")
			return
		}
		h.remote, h.err = newRemote(h.Token, h.Client, Retry{Attempts: h.Attempts, Backoff: h.Backoff, Timeout: h.Timeout}, h.Limits, &h.ledger)
	})
	if h.err != nil {
		return nil, fmt.Errorf("annotator %s: %w", h.URL, h.err)
	}
	size := h.BatchSize
	if size <= 0 {
		size = 64
	}
	out := make([][]float64, 0, len(items))
	for lo := 0; lo < len(items); lo += size {
		hi := min(lo+size, len(items))
		scores, err := h.post(ctx, items[lo:hi])
		if err != nil {
			return nil, fmt.Errorf("annotator %s, items %d-%d: %w", h.URL, lo, hi-1, err)
		}
		out = append(out, scores...)
	}
	return out, nil
}

func (h *HTTP) post(ctx context.Context, items []Item) ([][]float64, error) {
	body, err := json.Marshal(httpRequest{Items: items})
	if err != nil {
		return nil, err
	}
	data, err := h.remote.post(ctx, h.URL, body)
	if err != nil {
		return nil, err
	}
	scores, err := decodeAnswer(data, items)
	return scores, h.remote.redact(err)
}

// decodeAnswer parses a 200 answer's body and checks its shape against the request's
// items: one list per item, one finite number per response.
func decodeAnswer(data []byte, items []Item) ([][]float64, error) {
	// httpResponse's shape, with pointers: a null score must not read as 0.
	var r struct {
		Scores [][]*float64 `json:"scores"`
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf(`answer is not {"scores": [[...], ...]}: %v (%s)`, err, excerpt(data))
	}
	if len(r.Scores) != len(items) {
		return nil, fmt.Errorf("answer has %d score lists for %d items", len(r.Scores), len(items))
	}
	scores := make([][]float64, len(r.Scores))
	for i, s := range r.Scores {
		if len(s) != len(items[i].Responses) {
			return nil, fmt.Errorf("item %d: %d scores for %d responses", i, len(s), len(items[i].Responses))
		}
		if s != nil {
			scores[i] = make([]float64, len(s))
		}
		for j, v := range s {
			if v == nil {
				return nil, fmt.Errorf("item %d response %d: score null is not a finite number", i, j)
			}
			if math.IsNaN(*v) || math.IsInf(*v, 0) {
				return nil, fmt.Errorf("item %d response %d: score %v is not a finite number", i, j, *v)
			}
			scores[i][j] = *v
		}
	}
	return scores, nil
}

func excerpt(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	if s == "" {
		s = "(empty body)"
	}
	return s
}

// ValidUTF8 is s as an HTTP annotator receives it: each byte that is not part of valid UTF-8
// replaced by U+FFFD (what encoding/json does).
func ValidUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		b.WriteRune(r) // an invalid byte ranges as utf8.RuneError, i.e. U+FFFD
	}
	return b.String()
}
