package annotator

import "sync"

// Accounting is what a remote annotator spent and what its verdicts were, for a stage's status
// and the run report. Counts of one annotator instance; Add sums phases, shards or pods.
type Accounting struct {
	// Pairs is the number of response pairs a judge decided (each judged in both orders).
	Pairs int64 `json:"pairs,omitempty"`
	// Ties is the number of those pairs that ended tied, whatever the cause: the judge said tie
	// in both orders, the two orders disagreed (PositionFlips), or an answer stayed invalid
	// (Invalid).
	Ties int64 `json:"ties,omitempty"`
	// Invalid is the number of answers that could not be parsed after every retry.
	Invalid int64 `json:"invalid,omitempty"`
	// PositionFlips is the number of pairs whose two orders gave different verdicts.
	PositionFlips int64 `json:"positionFlips,omitempty"`
	// Requests is the number of HTTP requests sent, retries included.
	Requests int64 `json:"requests,omitempty"`
	// PromptTokens and CompletionTokens are the usage the service reported.
	PromptTokens     int64 `json:"promptTokens,omitempty"`
	CompletionTokens int64 `json:"completionTokens,omitempty"`
	// CacheHits is the number of verdicts read from the cache instead of requested.
	CacheHits int64 `json:"cacheHits,omitempty"`
	// Texts is the number of texts a reward model scored.
	Texts int64 `json:"texts,omitempty"`
}

// Add adds b's counts to a.
func (a *Accounting) Add(b Accounting) {
	a.Pairs += b.Pairs
	a.Ties += b.Ties
	a.Invalid += b.Invalid
	a.PositionFlips += b.PositionFlips
	a.Requests += b.Requests
	a.PromptTokens += b.PromptTokens
	a.CompletionTokens += b.CompletionTokens
	a.CacheHits += b.CacheHits
	a.Texts += b.Texts
}

// ledger is an Accounting safe for concurrent use.
type ledger struct {
	mu sync.Mutex
	a  Accounting
}

func (l *ledger) add(b Accounting) {
	l.mu.Lock()
	l.a.Add(b)
	l.mu.Unlock()
}

func (l *ledger) get() Accounting {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.a
}
