// Package sample draws continuations from a language model: batched, with a KV
// cache, temperature, top-k, top-p, greedy decoding and end-of-text stops.
package sample

// Model is what the sampler needs from a language model.
type Model interface {
	VocabSize() int
	// ContextLen is the maximum number of positions (prompt + generated).
	ContextLen() int
	// NewCache returns an empty KV cache for a batch of n sequences.
	NewCache(n int) Cache
}

// Cache holds per-row decoding state (keys/values and position).
type Cache interface {
	// Prefill runs a row's prompt (at least one token) and returns the logits
	// that follow its last token.
	Prefill(row int, tokens []int) []float64
	// Step appends tokens[i] to row rows[i] and returns each row's next-token logits.
	Step(rows []int, tokens []int) [][]float64
}
