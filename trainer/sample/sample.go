package sample

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"

	"github.com/bpo-dev/bpo/trainer/model/kernels"
)

// Options control Generate.
type Options struct {
	// Temperature divides the logits before the softmax; 0 means greedy.
	Temperature float64
	// TopK keeps the K most likely tokens (0 = no limit).
	TopK int
	// TopP keeps the smallest set of most likely tokens whose probability reaches TopP,
	// after top-k (0 or 1 = no limit).
	TopP float64
	// Greedy takes the argmax of the logits (lowest id on ties) and draws no random
	// numbers.
	Greedy bool
	// MaxNewTokens bounds each row's continuation (must be > 0).
	MaxNewTokens int
	// EOT ends a row when drawn; it is not included in the output. A negative EOT never
	// stops a row (0 is a valid id, so set EOT explicitly, e.g. from the tokenizer).
	EOT int
	// Seed and RowOffset fix the random streams: row i of this call draws from
	// RowRand(Seed, RowOffset+i), so a batch split into shards (each shard passing the
	// global index of its first row as RowOffset) samples exactly what one unsharded call
	// would, whatever the batch composition.
	Seed      uint64
	RowOffset int
}

// splitmix64 is a bijective 64-bit mixer (Steele, Lea, Flood 2014).
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// RowRand is the random stream of the row with global index row under seed: a PCG
// (math/rand/v2) seeded with (splitmix64(seed), splitmix64(splitmix64(seed) ^
// splitmix64(row))), so that streams of neighbouring rows and seeds are unrelated.
func RowRand(seed, row uint64) *rand.Rand {
	s1 := splitmix64(seed)
	return rand.New(rand.NewPCG(s1, splitmix64(s1^splitmix64(row))))
}

func (o Options) validate() error {
	switch {
	case o.MaxNewTokens <= 0:
		return fmt.Errorf("sample: MaxNewTokens must be > 0, got %d", o.MaxNewTokens)
	case !(o.Temperature >= 0) || math.IsInf(o.Temperature, 0):
		return fmt.Errorf("sample: Temperature must be >= 0 and finite, got %g", o.Temperature)
	case o.TopK < 0:
		return fmt.Errorf("sample: TopK must be >= 0, got %d", o.TopK)
	case !(o.TopP >= 0 && o.TopP <= 1):
		return fmt.Errorf("sample: TopP must be in [0,1], got %g", o.TopP)
	case o.RowOffset < 0:
		return fmt.Errorf("sample: RowOffset must be >= 0, got %d", o.RowOffset)
	}
	return nil
}

// Generate continues each prompt (row i of the batch) with one shared Cache and
// returns the new tokens per row (never nil, possibly empty).
//
// A row stops when it draws EOT (not included in the output), when it has
// MaxNewTokens tokens, or when prompt + output reaches m.ContextLen() (the last
// token is drawn but never fed back, so a prompt of ContextLen-1 tokens still gets one
// token and one of ContextLen tokens gets none). Each step feeds the still-active rows,
// in ascending row order, to Cache.Step.
//
// Each drawn (non-greedy) token consumes exactly one Float64 from the row's stream
// RowRand(Seed, RowOffset+row): the token is found by walking the filtered
// distribution in id order. Prompts must be non-empty, no longer than ContextLen, with
// ids in [0, VocabSize).
func Generate(m Model, prompts [][]int, opt Options) ([][]int, error) {
	if err := opt.validate(); err != nil {
		return nil, err
	}
	vocab, ctx := m.VocabSize(), m.ContextLen()
	if vocab <= 0 || ctx <= 0 {
		return nil, fmt.Errorf("sample: model has vocab %d and context %d", vocab, ctx)
	}
	for i, p := range prompts {
		if len(p) == 0 {
			return nil, fmt.Errorf("sample: row %d: empty prompt", i)
		}
		if len(p) > ctx {
			return nil, fmt.Errorf("sample: row %d: prompt of %d tokens exceeds the context length %d", i, len(p), ctx)
		}
		for _, id := range p {
			if id < 0 || id >= vocab {
				return nil, fmt.Errorf("sample: row %d: token %d outside the vocabulary [0,%d)", i, id, vocab)
			}
		}
	}
	out := make([][]int, len(prompts))
	for i := range out {
		out[i] = []int{}
	}
	if len(prompts) == 0 {
		return out, nil
	}
	greedy := opt.Greedy || opt.Temperature == 0
	rngs := make([]*rand.Rand, len(prompts))
	logits := make([][]float64, len(prompts))
	active := make([]int, 0, len(prompts))
	cache := m.NewCache(len(prompts))
	for i, p := range prompts {
		if len(p) == ctx {
			continue
		}
		if !greedy {
			rngs[i] = RowRand(opt.Seed, uint64(opt.RowOffset+i))
		}
		logits[i] = cache.Prefill(i, p)
		active = append(active, i)
	}
	s := newSampler(vocab)
	for len(active) > 0 {
		var rows, toks []int
		for _, i := range active {
			l := logits[i]
			if len(l) != vocab {
				return nil, fmt.Errorf("sample: row %d: model returned %d logits, vocabulary is %d", i, len(l), vocab)
			}
			var tok int
			var err error
			if greedy {
				tok, err = Argmax(l)
			} else {
				tok, err = s.draw(l, opt.Temperature, opt.TopK, opt.TopP, rngs[i].Float64())
			}
			if err != nil {
				return nil, fmt.Errorf("sample: row %d after %d new tokens: %w", i, len(out[i]), err)
			}
			if tok == opt.EOT {
				continue
			}
			out[i] = append(out[i], tok)
			if len(out[i]) >= opt.MaxNewTokens || len(prompts[i])+len(out[i]) >= ctx {
				continue
			}
			rows, toks = append(rows, i), append(toks, tok)
		}
		active = rows
		if len(rows) == 0 {
			break
		}
		next := cache.Step(rows, toks)
		if len(next) != len(rows) {
			return nil, fmt.Errorf("sample: Cache.Step returned %d rows of logits for %d rows", len(next), len(rows))
		}
		for k, i := range rows {
			logits[i] = next[k]
		}
	}
	return out, nil
}

var errNoFinite = errors.New("no finite logit")

// Argmax is the id of the largest logit, the lowest id on ties; NaN is an error.
func Argmax(logits []float64) (int, error) {
	best := -1
	for i, v := range logits {
		if math.IsNaN(v) {
			return 0, fmt.Errorf("logit %d is NaN", i)
		}
		if best < 0 || v > logits[best] {
			best = i
		}
	}
	if best < 0 || math.IsInf(logits[best], -1) {
		return 0, errNoFinite
	}
	return best, nil
}

type sampler struct {
	probs []float64
	order []int
	keep  []bool
}

func newSampler(v int) *sampler {
	return &sampler{probs: make([]float64, v), order: make([]int, v), keep: make([]bool, v)}
}

// Probs is the distribution Generate draws from: softmax(logits/temperature)
// restricted to the top-k ids (ties broken by lower id), then to the smallest prefix of
// the remaining ids, most likely first, whose probability reaches topP, renormalised.
// temperature must be > 0; topK 0 and topP 0 or 1 disable those filters.
func Probs(logits []float64, temperature float64, topK int, topP float64) ([]float64, error) {
	s := newSampler(len(logits))
	if err := s.filter(logits, temperature, topK, topP); err != nil {
		return nil, err
	}
	return s.probs, nil
}

// filter leaves the normalised filtered distribution in s.probs.
func (s *sampler) filter(logits []float64, temperature float64, topK int, topP float64) error {
	if !(temperature > 0) {
		return fmt.Errorf("temperature %g must be > 0", temperature)
	}
	mx, err := Argmax(logits)
	if err != nil {
		return err
	}
	top := logits[mx]
	if math.IsInf(top, 1) {
		return fmt.Errorf("logit %d is +Inf", mx)
	}
	p := s.probs[:len(logits)]
	sum := kernels.SoftmaxWeights(p, logits, top, 1/temperature)
	for i := range p {
		p[i] /= sum
	}
	v := len(logits)
	if topK > 0 && topK < v || topP > 0 && topP < 1 {
		order := s.order[:v]
		for i := range order {
			order[i] = i
		}
		sort.Slice(order, func(a, b int) bool {
			la, lb := logits[order[a]], logits[order[b]]
			return la > lb || la == lb && order[a] < order[b]
		})
		n := v
		if topK > 0 && topK < n {
			n = topK
		}
		if topP > 0 && topP < 1 {
			mass := 0.0
			for _, id := range order[:n] {
				mass += p[id]
			}
			cum := 0.0
			for k, id := range order[:n] {
				cum += p[id] / mass
				if cum >= topP {
					n = k + 1
					break
				}
			}
		}
		keep := s.keep[:v]
		clear(keep)
		for _, id := range order[:n] {
			keep[id] = true
		}
		sum = 0
		for i := range p {
			if !keep[i] {
				p[i] = 0
			}
			sum += p[i]
		}
		for i := range p {
			p[i] /= sum
		}
	}
	return nil
}

// draw filters and inverts the cumulative distribution at u in id order.
func (s *sampler) draw(logits []float64, temperature float64, topK int, topP float64, u float64) (int, error) {
	if err := s.filter(logits, temperature, topK, topP); err != nil {
		return 0, err
	}
	cum, last := 0.0, -1
	for i, p := range s.probs[:len(logits)] {
		if p == 0 {
			continue
		}
		last = i
		cum += p
		if u < cum {
			return i, nil
		}
	}
	return last, nil // rounding: u just below 1 and cum just below 1
}
