package annotator

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-retryablehttp"
)

// Retry is how a remote annotator retries one request: connection errors, 429 and 5xx (but
// 501) are retried after a jittered exponential backoff, or after the Retry-After of a 429 or
// 503 answer; any other status fails at once. Zero fields take the defaults.
type Retry struct {
	Attempts   int           // tries of one request, the first included (default 4)
	Backoff    time.Duration // first retry delay, doubled per retry, jittered (default 1s)
	MaxBackoff time.Duration // cap of the backoff, not of a Retry-After (default 30s)
	Timeout    time.Duration // per attempt, reading the answer included (default 60s)
}

func (r Retry) withDefaults() Retry {
	if r.Attempts <= 0 {
		r.Attempts = 4
	}
	r.Backoff = cmp.Or(r.Backoff, time.Second)
	r.MaxBackoff = cmp.Or(r.MaxBackoff, 30*time.Second)
	r.Timeout = cmp.Or(r.Timeout, 60*time.Second)
	return r
}

// maxAnswer bounds an answer's body in memory.
const maxAnswer = 64 << 20

// remote is the HTTP side every remote annotator shares: retries (go-retryablehttp), Limits,
// request accounting, and a bearer token that never reaches an error.
type remote struct {
	token  string
	lim    *limiter
	ledger *ledger
	rc     *retryablehttp.Client
}

// newRemote builds the client. client is the caller's *http.Client (nil: a default one); its
// Transport, Jar, CheckRedirect and Timeout are kept.
func newRemote(token string, client *http.Client, retry Retry, limits Limits, led *ledger) (*remote, error) {
	lim, err := newLimiter(limits)
	if err != nil {
		return nil, err
	}
	retry = retry.withDefaults()
	hc := &http.Client{}
	if client != nil {
		*hc = *client
	}
	hc.Transport = &meteredTransport{base: cmp.Or[http.RoundTripper](hc.Transport, http.DefaultTransport), lim: lim, ledger: led, timeout: retry.Timeout}
	return &remote{token: token, lim: lim, ledger: led, rc: &retryablehttp.Client{
		HTTPClient:   hc,
		RetryWaitMin: retry.Backoff,
		RetryWaitMax: retry.MaxBackoff,
		RetryMax:     retry.Attempts - 1,
		CheckRetry:   checkRetry,
		Backoff:      backoff,
		ErrorHandler: giveUp,
		// Logger nil: nothing is logged (no URL, no header).
	}}, nil
}

// statusError is an answer with a status other than 200.
type statusError struct {
	code int
	body string // excerpt
}

func (e *statusError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.code, e.body) }

// post sends body (JSON) to url and returns the 200 answer's body. Any other final status is a
// *statusError; the error never holds the token.
func (r *remote) post(ctx context.Context, url string, body []byte) ([]byte, error) {
	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodPost, url, body)
	if err != nil {
		return nil, r.redact(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	if r.token != "" {
		req.Header.Set("Authorization", "Bearer "+r.token)
	}
	// Reading the answer is part of the attempt: a connection cut half way is retried.
	req.SetResponseHandler(func(resp *http.Response) error {
		data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(data))
		if err != nil {
			return fmt.Errorf("reading the answer: %w", err)
		}
		return nil
	})
	resp, err := r.rc.Do(req)
	if err != nil {
		return nil, r.redact(err)
	}
	data, _ := io.ReadAll(resp.Body) // in memory already
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, r.redact(&statusError{resp.StatusCode, excerpt(data)})
	}
	return data, nil
}

// redact replaces the token in err's message; errors.Is and As still see through it.
func (r *remote) redact(err error) error {
	if err == nil || r.token == "" || !strings.Contains(err.Error(), r.token) {
		return err
	}
	return &redacted{err: err, token: r.token}
}

type redacted struct {
	err   error
	token string
}

func (e *redacted) Error() string { return strings.ReplaceAll(e.err.Error(), e.token, "[redacted]") }
func (e *redacted) Unwrap() error { return e.err }

// checkRetry is go-retryablehttp's policy (connection errors, 429, 5xx but 501; never after
// the context ends), except that a spent budget is final.
func checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	var be *BudgetError
	if errors.As(err, &be) {
		return false, be
	}
	return retryablehttp.ErrorPropagatedRetryPolicy(ctx, resp, err)
}

// backoff honours the Retry-After of a 429 or 503 answer (go-retryablehttp parses both forms),
// and is otherwise exponential with equal jitter: a delay d = min*2^n (capped at max) becomes
// one drawn uniformly from [d/2, d], so that workers that failed together do not retry together.
func backoff(lo, hi time.Duration, n int, resp *http.Response) time.Duration {
	if resp != nil && (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) &&
		resp.Header.Get("Retry-After") != "" {
		return retryablehttp.DefaultBackoff(lo, hi, n, resp)
	}
	d := hi
	if n < 62 && lo<<n > 0 && lo<<n < hi {
		d = lo << n
	}
	return d/2 + rand.N(d/2+1)
}

// giveUp turns the last failed attempt into one error: the service's status and message, or
// the connection error, after how many attempts.
func giveUp(resp *http.Response, err error, tries int) (*http.Response, error) {
	var detail error = err
	if resp != nil {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			detail = &statusError{resp.StatusCode, excerpt(data)}
		}
	}
	var be *BudgetError
	switch {
	case errors.As(err, &be):
		return nil, be
	case err == context.Canceled || err == context.DeadlineExceeded: // the caller's context (checkRetry)
		return nil, err
	case tries > 1:
		return nil, fmt.Errorf("%d attempts failed, the last: %w", tries, detail)
	}
	return nil, detail
}

// meteredTransport holds every attempt to the Limits, counts it, and bounds it by the
// per-attempt timeout (until its body is closed).
type meteredTransport struct {
	base    http.RoundTripper
	lim     *limiter
	ledger  *ledger
	timeout time.Duration
}

func (t *meteredTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	release, err := t.lim.acquire(req.Context())
	if err != nil {
		if req.Body != nil {
			req.Body.Close() // a RoundTripper must close the body, even on error
		}
		return nil, err
	}
	t.ledger.add(Accounting{Requests: 1})
	ctx, cancel := context.WithTimeout(req.Context(), t.timeout)
	resp, err := t.base.RoundTrip(req.WithContext(ctx))
	if err != nil {
		cancel()
		release()
		return nil, err
	}
	var once sync.Once
	resp.Body = &doneBody{ReadCloser: resp.Body, done: func() { once.Do(func() { cancel(); release() }) }}
	return resp, nil
}

type doneBody struct {
	io.ReadCloser
	done func()
}

func (b *doneBody) Close() error {
	err := b.ReadCloser.Close()
	b.done()
	return err
}
