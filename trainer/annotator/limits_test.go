package annotator

import (
	"context"
	"testing"
	"time"
)

// TestTokensPerMinute: a request waits while the minute's token bucket is in debt. At 6000
// tokens a minute (100 a second, a bucket of 6000), an answer that reports 6020 tokens puts
// the bucket 21 tokens in debt (the request's own stand-in token included): the next request
// waits about 0.21s.
func TestTokensPerMinute(t *testing.T) {
	lim, err := newLimiter(Limits{TokensPerMinute: 6000})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	release, err := lim.acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	release()
	lim.spend(6020)
	start := time.Now()
	release, err = lim.acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	release()
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("the next request went after %v, want about 0.21s", d)
	}
	// Large answers are charged in full, beyond one bucket.
	lim.spend(3 * 6000)
	if tokens := lim.toks.Tokens(); tokens > -17000 {
		t.Errorf("bucket at %v after 18000 tokens, want about -18000", tokens)
	}
}

func TestBudgetCountsEveryRequest(t *testing.T) {
	lim, _ := newLimiter(Limits{MaxRequests: 2})
	for i := range 3 {
		release, err := lim.acquire(context.Background())
		if (err != nil) != (i == 2) {
			t.Fatalf("request %d: %v", i+1, err)
		}
		if err == nil {
			release()
		}
	}
}
