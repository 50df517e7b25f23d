package annotator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"
	"golang.org/x/time/rate"
)

// Limits bound what a remote annotator (a judge, a reward model) may spend. Zero fields are
// unlimited, except MaxConcurrency (default 4).
type Limits struct {
	// MaxConcurrency is the number of requests in flight at once (default 4).
	MaxConcurrency int
	// RequestsPerMinute spaces requests evenly, 60s/RequestsPerMinute apart (retries included).
	RequestsPerMinute int
	// TokensPerMinute bounds prompt+completion tokens, as the service reports them in its
	// answers' usage: a bucket of one minute's tokens, refilled continuously; a request waits
	// while the bucket is in debt.
	TokensPerMinute int
	// MaxRequests and MaxTokens are the budget of the run (of this annotator instance): once
	// spent, the next request fails with a BudgetError (errors.Is ErrBudgetExceeded). Requests
	// already in flight finish, so tokens may end a little over MaxTokens.
	MaxRequests int64
	MaxTokens   int64
}

// DefaultMaxConcurrency is Limits.MaxConcurrency when unset.
const DefaultMaxConcurrency = 4

// ErrBudgetExceeded is what errors.Is finds in the error of a scorer whose budget is spent.
var ErrBudgetExceeded = errors.New("annotator budget exceeded")

// BudgetError says which budget of Limits was spent.
type BudgetError struct {
	Field string // "MaxRequests" or "MaxTokens"
	Limit int64
	Used  int64
}

func (e *BudgetError) Error() string {
	what := "requests sent"
	if e.Field == "MaxTokens" {
		what = "tokens used"
	}
	return fmt.Sprintf("%s: %d %s, limit %s is %d; raise %s to spend more", ErrBudgetExceeded, e.Used, what, e.Field, e.Limit, e.Field)
}

// Is makes errors.Is(err, ErrBudgetExceeded) hold.
func (e *BudgetError) Is(target error) bool { return target == ErrBudgetExceeded }

// validate names the first bad field.
func (l Limits) validate() error {
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"MaxConcurrency", int64(l.MaxConcurrency)}, {"RequestsPerMinute", int64(l.RequestsPerMinute)},
		{"TokensPerMinute", int64(l.TokensPerMinute)}, {"MaxRequests", l.MaxRequests}, {"MaxTokens", l.MaxTokens},
	} {
		if f.v < 0 {
			return fmt.Errorf("limits.%s is %d: use 0 (no limit) or a positive number", f.name, f.v)
		}
	}
	return nil
}

// limiter enforces Limits for every request of one annotator.
type limiter struct {
	l    Limits
	sem  *semaphore.Weighted
	reqs *rate.Limiter // nil: no limit
	toks *rate.Limiter // nil: no limit

	mu       sync.Mutex
	requests int64
	tokens   int64
}

func newLimiter(l Limits) (*limiter, error) {
	if err := l.validate(); err != nil {
		return nil, err
	}
	if l.MaxConcurrency == 0 {
		l.MaxConcurrency = DefaultMaxConcurrency
	}
	lim := &limiter{l: l, sem: semaphore.NewWeighted(int64(l.MaxConcurrency))}
	if l.RequestsPerMinute > 0 {
		lim.reqs = rate.NewLimiter(rate.Every(time.Minute/time.Duration(l.RequestsPerMinute)), 1)
	}
	if l.TokensPerMinute > 0 {
		lim.toks = rate.NewLimiter(rate.Limit(float64(l.TokensPerMinute)/60), l.TokensPerMinute)
	}
	return lim, nil
}

// acquire waits for a slot and the rate limits, checks the budget and counts the request.
// release frees the slot; it must be called once the answer has been read.
func (lim *limiter) acquire(ctx context.Context) (release func(), err error) {
	if err := lim.sem.Acquire(ctx, 1); err != nil {
		return nil, err
	}
	release = func() { lim.sem.Release(1) }
	if err := lim.budget(); err != nil {
		release()
		return nil, err
	}
	if lim.reqs != nil {
		if err := lim.reqs.Wait(ctx); err != nil {
			release()
			return nil, err
		}
	}
	if lim.toks != nil {
		// One token stands for the request until its usage is known (spend).
		if err := lim.toks.Wait(ctx); err != nil {
			release()
			return nil, err
		}
	}
	lim.mu.Lock()
	defer lim.mu.Unlock()
	if err := lim.budgetLocked(); err != nil { // spent by another request while this one waited
		release()
		return nil, err
	}
	lim.requests++
	return release, nil
}

func (lim *limiter) budget() error {
	lim.mu.Lock()
	defer lim.mu.Unlock()
	return lim.budgetLocked()
}

func (lim *limiter) budgetLocked() error {
	if lim.l.MaxRequests > 0 && lim.requests >= lim.l.MaxRequests {
		return &BudgetError{Field: "MaxRequests", Limit: lim.l.MaxRequests, Used: lim.requests}
	}
	if lim.l.MaxTokens > 0 && lim.tokens >= lim.l.MaxTokens {
		return &BudgetError{Field: "MaxTokens", Limit: lim.l.MaxTokens, Used: lim.tokens}
	}
	return nil
}

// spend records the tokens an answer reported and charges them to the per-minute bucket (in
// debt if need be: the next requests wait for it).
func (lim *limiter) spend(tokens int64) {
	if tokens <= 0 {
		return
	}
	lim.mu.Lock()
	lim.tokens += tokens
	lim.mu.Unlock()
	if lim.toks == nil {
		return
	}
	n := tokens - 1 // acquire took one
	now := time.Now()
	for n > 0 {
		chunk := min(n, int64(lim.toks.Burst())) // ReserveN refuses more than the burst at once
		lim.toks.ReserveN(now, int(chunk))
		n -= chunk
	}
}

// usesTokens reports whether a limit needs the token usage of answers.
func (l Limits) usesTokens() bool { return l.TokensPerMinute > 0 || l.MaxTokens > 0 }
