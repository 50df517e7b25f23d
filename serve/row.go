package serve

import (
	"math/rand/v2"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/bpo-dev/bpo/trainer/model/kernels"
	"github.com/bpo-dev/bpo/trainer/sample"
	"github.com/bpo-dev/bpo/trainer/tokenizer"
)

// row is one choice being generated: its prompt, its random stream and what it has produced.
// Only the engine that runs it touches it until its job is done.
type row struct {
	job    *job
	prompt []int
	rng    *rand.Rand // nil when greedy
	slot   int        // KV-cache row while running
	logits []float64  // the next token's logits

	out    []int       // generated tokens (end-of-text excluded)
	lps    []float64   // their log-probabilities under the model (temperature 1, no top-p), if asked for
	tops   [][]tokenLP // per generated token, the job's Logprobs most likely tokens
	text   string      // decoded out, cut before a stop sequence
	finish string      // "" while running, then "stop" or "length"
}

// tokenLP is a token id and its log-probability.
type tokenLP struct {
	id int
	lp float64
}

// decodeOptions are what a row's decoding needs from its request.
type decodeOptions struct {
	temperature float64
	topP        float64
	topK        int // 0: none
	maxTokens   int
	eot         int
	stops       []string
	logprobs    int // -1: none
}

// rowRand is the random stream of choice i of a request with seed: trainer/sample's stream of
// row i, so that a request's choices are what sample.Generate draws for its prompts laid out
// prompt-major (choice i = prompt i/n, sample i%n), whatever else shares the batch.
func rowRand(o decodeOptions, seed uint64, i int) *rand.Rand {
	if o.temperature == 0 {
		return nil
	}
	return sample.RowRand(seed, uint64(i))
}

// drawToken draws from logits as trainer/sample's Generate does: greedy (lowest id on ties) at
// temperature 0, else one Float64 u from the row's stream inverts the cumulative filtered
// distribution (sample.Probs: temperature, then top-p) walked in id order.
func drawToken(logits []float64, o decodeOptions, rng *rand.Rand) (int, error) {
	if o.temperature == 0 {
		return sample.Argmax(logits)
	}
	probs, err := sample.Probs(logits, o.temperature, o.topK, o.topP)
	if err != nil {
		return 0, err
	}
	u := rng.Float64()
	cum, last := 0.0, -1
	for i, p := range probs {
		if p == 0 {
			continue
		}
		last = i
		cum += p
		if u < cum {
			return i, nil
		}
	}
	return last, nil
}

// topTokens returns the k ids of largest logit (lower id first on ties) with their
// log-probabilities, given the logits' log-sum-exp.
func topTokens(logits []float64, lse float64, k int) []tokenLP {
	if k <= 0 {
		return nil
	}
	top := make([]tokenLP, 0, k+1)
	for id, l := range logits {
		if len(top) == k && l <= top[k-1].lp {
			continue
		}
		i, _ := slices.BinarySearchFunc(top, l, func(t tokenLP, l float64) int {
			if t.lp >= l {
				return -1 // equal logits keep the earlier (lower) id first
			}
			return 1
		})
		top = slices.Insert(top, i, tokenLP{id, l})
		if len(top) > k {
			top = top[:k]
		}
	}
	for i := range top {
		top[i].lp -= lse
	}
	return top
}

// advance draws the row's next token from its logits and records it. It reports whether the
// row goes on, in which case tok must be fed to the model and its logits set before the next
// call; otherwise finish is set.
func (r *row) advance(tk tokenizer.Tokenizer, o decodeOptions) (tok int, more bool, err error) {
	tok, err = drawToken(r.logits, o, r.rng)
	if err != nil {
		return 0, false, err
	}
	if tok == o.eot {
		r.finish = "stop"
		return tok, false, nil
	}
	r.out = append(r.out, tok)
	if o.logprobs >= 0 { // a log-sum-exp over the vocabulary per token: only when asked for
		lse := kernels.LogSumExp(r.logits)
		r.lps = append(r.lps, r.logits[tok]-lse)
		if o.logprobs > 0 {
			r.tops = append(r.tops, topTokens(r.logits, lse, o.logprobs))
		}
	}
	text := tk.Decode(r.out)
	if i := firstStop(text, o.stops, len(r.text)); i >= 0 {
		r.text, r.finish = text[:i], "stop"
		return tok, false, nil
	}
	r.text = text
	if len(r.out) >= o.maxTokens {
		r.finish = "length"
		return tok, false, nil
	}
	return tok, true, nil
}

// tokenID is how a token appears in logprobs with return_tokens_as_token_ids (vLLM's spelling).
func tokenID(id int) string { return "token_id:" + strconv.Itoa(id) }

// tokenString is how a token appears in logprobs: its text, "<|endoftext|>" for end-of-text, and
// for a token that is not valid UTF-8 on its own (a byte of a multi-byte character) vLLM's
// "bytes:\xNN" spelling, so that no two tokens collide on U+FFFD.
func tokenString(tk tokenizer.Tokenizer, id int) string {
	if id == tk.EOT() {
		return tokenizer.EndOfText
	}
	s := tk.Decode([]int{id})
	if utf8.ValidString(s) {
		return s
	}
	b := []byte("bytes:")
	const hex = "0123456789abcdef"
	for i := 0; i < len(s); i++ {
		b = append(b, '\\', 'x', hex[s[i]>>4], hex[s[i]&15])
	}
	return string(b)
}
