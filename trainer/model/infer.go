package model

import (
	"fmt"
	"sync"

	"github.com/bpo-dev/bpo/trainer/model/kernels"
	"github.com/bpo-dev/bpo/trainer/sample"
)

// Inference is a gradient-free forward pass of a GPT-2 model, for sampling (through a KV cache)
// and for scoring sequences. It runs the same layer kernels as the training graph
// (trainer/model/kernels), in float32 by default (NewInferenceAt chooses). It is safe for
// concurrent use; a cache is not.
//
// In float64 Inference keeps references to the weights' data (do not modify the weights while it
// is in use); in float32 it keeps a converted copy.
type Inference struct {
	cfg       Config
	precision Precision
	eng       infEngine
}

// infEngine is the forward pass in one precision (infModel[F]).
type infEngine interface {
	logitsAll(tokens []int) [][]float64
	tokenLogProbs(prompts, responses [][]int) [][]float64
	newCache(n int) infCacheEngine
}

// infCacheEngine is a KV cache in one precision (infCache[F]).
type infCacheEngine interface {
	length(row int) int
	reset(row int)
	prefill(row int, tokens []int) []float64
	step(rows, tokens []int) [][]float64
}

var _ sample.Model = (*Inference)(nil)

// NewInference prepares the float32 inference path for w. It panics if w is not valid (see
// (*Weights).Validate); weights from LoadWeights, Init or MergeMean are.
func NewInference(w *Weights) *Inference { return NewInferenceAt(w, Float32) }

// NewInferenceAt is NewInference in precision p (Float64 for golden tests and checks).
func NewInferenceAt(w *Weights, p Precision) *Inference {
	if err := w.Validate(); err != nil {
		panic(fmt.Sprintf("model.NewInference: %v", err))
	}
	if err := p.Validate(); err != nil {
		panic(fmt.Sprintf("model.NewInference: %v", err))
	}
	m := &Inference{cfg: w.Config, precision: p.orDefault()}
	if m.precision == Float64 {
		m.eng = newInfModel[float64](w)
	} else {
		m.eng = newInfModel[float32](w)
	}
	return m
}

// Config returns the model's config.
func (m *Inference) Config() Config { return m.cfg }

// Precision is the dtype the forward pass runs in.
func (m *Inference) Precision() Precision { return m.precision }

// VocabSize is the number of logits per position.
func (m *Inference) VocabSize() int { return m.cfg.VocabSize }

// ContextLen is n_positions, the maximum prompt + generated length.
func (m *Inference) ContextLen() int { return m.cfg.NPositions }

func (m *Inference) checkTokens(tokens []int) error {
	for i, t := range tokens {
		if t < 0 || t >= m.cfg.VocabSize {
			return fmt.Errorf("token %d at index %d outside the vocabulary [0,%d)", t, i, m.cfg.VocabSize)
		}
	}
	return nil
}

// Logits runs the full forward pass over tokens without a cache and returns the logits at every
// position ([len(tokens)][V]). It panics on an empty or over-long sequence or an
// out-of-vocabulary token.
func (m *Inference) Logits(tokens []int) [][]float64 {
	if len(tokens) == 0 || len(tokens) > m.cfg.NPositions {
		panic(fmt.Sprintf("model.Logits: %d tokens, want 1..n_positions %d", len(tokens), m.cfg.NPositions))
	}
	if err := m.checkTokens(tokens); err != nil {
		panic("model.Logits: " + err.Error())
	}
	return m.eng.logitsAll(tokens)
}

// infChunkFloats bounds the MLP activation buffer (N·4d floats) of one scoring chunk.
// A variable so that tests can force several chunks.
var infChunkFloats = 1 << 21

// TokenLogProbs returns, for each pair i, the log-probability of every token of responses[i]
// given prompts[i] and the response tokens before it. Prompts must be non-empty;
// len(prompt)+len(response) must not exceed n_positions. Sequences are packed into blocks for the
// matrix products and blocks run in parallel.
func (m *Inference) TokenLogProbs(prompts, responses [][]int) ([][]float64, error) {
	if len(prompts) != len(responses) {
		return nil, fmt.Errorf("model: %d prompts but %d responses", len(prompts), len(responses))
	}
	for i := range prompts {
		lp, lr := len(prompts[i]), len(responses[i])
		if lp == 0 {
			return nil, fmt.Errorf("model: prompt %d is empty (the first response token needs a context)", i)
		}
		if lp+lr > m.cfg.NPositions {
			return nil, fmt.Errorf("model: sequence %d has length %d (prompt %d + response %d), more than n_positions %d", i, lp+lr, lp, lr, m.cfg.NPositions)
		}
		if err := m.checkTokens(prompts[i]); err != nil {
			return nil, fmt.Errorf("model: prompt %d: %w", i, err)
		}
		if err := m.checkTokens(responses[i]); err != nil {
			return nil, fmt.Errorf("model: response %d: %w", i, err)
		}
	}
	return m.eng.tokenLogProbs(prompts, responses), nil
}

// SequenceLogProbs returns, for each pair i, the sum of the log-probabilities of the tokens of
// responses[i] given prompts[i] (prompt tokens are not scored) and the number of response tokens.
// See TokenLogProbs for the constraints.
func (m *Inference) SequenceLogProbs(prompts, responses [][]int) (sums []float64, counts []int, err error) {
	lps, err := m.TokenLogProbs(prompts, responses)
	if err != nil {
		return nil, nil, err
	}
	sums = make([]float64, len(lps))
	counts = make([]int, len(lps))
	for i, l := range lps {
		var s float64
		for _, v := range l {
			s += v
		}
		sums[i], counts[i] = s, len(l)
	}
	return sums, counts, nil
}

// ---- KV cache (sample.Cache) ----

// KVCache is the decoding state of a batch of sequences: per row, the keys and values of every
// layer at the positions seen so far. Not safe for concurrent use.
type KVCache struct {
	m *Inference
	n int
	c infCacheEngine
}

var _ sample.Cache = (*KVCache)(nil)

// NewCache returns an empty KV cache for n rows (sample.Model).
func (m *Inference) NewCache(n int) sample.Cache { return m.NewKVCache(n) }

// NewKVCache is NewCache with the concrete type.
func (m *Inference) NewKVCache(n int) *KVCache { return &KVCache{m: m, n: n, c: m.eng.newCache(n)} }

// Len returns the number of positions row holds.
func (c *KVCache) Len(row int) int { return c.c.length(row) }

// Reset empties a row (keeping its memory).
func (c *KVCache) Reset(row int) { c.c.reset(row) }

// Prefill resets row and runs its prompt (at least one token, at most n_positions), returning the
// logits that follow the last token. It panics on bad input.
func (c *KVCache) Prefill(row int, tokens []int) []float64 {
	m := c.m
	if row < 0 || row >= c.n {
		panic(fmt.Sprintf("model.KVCache.Prefill: row %d outside [0,%d)", row, c.n))
	}
	if len(tokens) == 0 || len(tokens) > m.cfg.NPositions {
		panic(fmt.Sprintf("model.KVCache.Prefill: row %d: %d prompt tokens, want 1..n_positions %d", row, len(tokens), m.cfg.NPositions))
	}
	if err := m.checkTokens(tokens); err != nil {
		panic(fmt.Sprintf("model.KVCache.Prefill: row %d: %v", row, err))
	}
	return c.c.prefill(row, tokens)
}

// Step appends tokens[i] to row rows[i] (rows distinct) and returns each row's next-token logits.
// A row that was never prefilled starts at position 0. It panics if a row would exceed
// n_positions or a token is out of the vocabulary.
func (c *KVCache) Step(rows []int, tokens []int) [][]float64 {
	m := c.m
	if len(rows) != len(tokens) {
		panic(fmt.Sprintf("model.KVCache.Step: %d rows but %d tokens", len(rows), len(tokens)))
	}
	if len(rows) == 0 {
		return nil
	}
	if err := m.checkTokens(tokens); err != nil {
		panic("model.KVCache.Step: " + err.Error())
	}
	seen := make(map[int]bool, len(rows))
	for _, r := range rows {
		if r < 0 || r >= c.n {
			panic(fmt.Sprintf("model.KVCache.Step: row %d outside [0,%d)", r, c.n))
		}
		if seen[r] {
			panic(fmt.Sprintf("model.KVCache.Step: row %d appears twice", r))
		}
		seen[r] = true
		if n := c.c.length(r); n+1 > m.cfg.NPositions {
			panic(fmt.Sprintf("model.KVCache.Step: row %d is at position %d, n_positions is %d", r, n, m.cfg.NPositions))
		}
	}
	return c.c.step(rows, tokens)
}

// ---- the forward pass, in precision F ----

type infModel[F kernels.Float] struct {
	d, nh, hd, vocab, nPos int
	eps                    float64
	wte, wpe               []F
	layers                 []infLayer[F]
	lnfG, lnfB             []F
}

type infLayer[F kernels.Float] struct {
	ln1G, ln1B   []F
	attnW, attnB []F // [d, 3d], [3d]
	projW, projB []F // [d, d], [d]
	ln2G, ln2B   []F
	fcW, fcB     []F // [d, 4d], [4d]
	fc2W, fc2B   []F // [4d, d], [d]
}

func newInfModel[F kernels.Float](w *Weights) *infModel[F] {
	c := w.Config
	t := func(name string) []F { return grAs[F](w.Tensors[name].Data) }
	m := &infModel[F]{
		d: c.NEmbd, nh: c.NHead, hd: c.NEmbd / c.NHead, vocab: c.VocabSize, nPos: c.NPositions,
		eps: c.LayerNormEpsilon,
		wte: t("wte.weight"), wpe: t("wpe.weight"), lnfG: t("ln_f.weight"), lnfB: t("ln_f.bias"),
	}
	for l := 0; l < c.NLayer; l++ {
		p := fmt.Sprintf("h.%d.", l)
		g := func(n string) []F { return t(p + n) }
		m.layers = append(m.layers, infLayer[F]{
			ln1G: g("ln_1.weight"), ln1B: g("ln_1.bias"),
			attnW: g("attn.c_attn.weight"), attnB: g("attn.c_attn.bias"),
			projW: g("attn.c_proj.weight"), projB: g("attn.c_proj.bias"),
			ln2G: g("ln_2.weight"), ln2B: g("ln_2.bias"),
			fcW: g("mlp.c_fc.weight"), fcB: g("mlp.c_fc.bias"),
			fc2W: g("mlp.c_proj.weight"), fc2B: g("mlp.c_proj.bias"),
		})
	}
	return m
}

// infSeg is one sequence inside a forward block: n new tokens (consecutive rows of the block) at
// positions past..past+n-1. With kv == nil the keys and values are those of the block itself
// (past must be 0); otherwise they are appended to kv and attention runs over kv's first past+n
// positions.
type infSeg[F kernels.Float] struct {
	n, past int
	kv      *infKV[F]
}

// infKV is the key/value cache of one sequence: per layer, [cap, d] keys and values.
type infKV[F kernels.Float] struct {
	n    int // positions filled
	k, v [][]F
}

func (kv *infKV[F]) reserve(nLayer, d, need, limit int) {
	if len(kv.k) == 0 {
		kv.k = make([][]F, nLayer)
		kv.v = make([][]F, nLayer)
	}
	if len(kv.k[0]) >= need*d {
		return
	}
	c := min(max(need, 2*len(kv.k[0])/d, 16), limit)
	for l := 0; l < nLayer; l++ {
		nk := make([]F, c*d)
		copy(nk, kv.k[l][:kv.n*d])
		kv.k[l] = nk
		nv := make([]F, c*d)
		copy(nv, kv.v[l][:kv.n*d])
		kv.v[l] = nv
	}
}

// forward runs the transformer over a block of tokens (segments laid out in order) and returns
// the final hidden states [N, d] before ln_f. Caches of segments are updated.
func (m *infModel[F]) forward(tokens []int, segs []infSeg[F]) []F {
	d, N := m.d, len(tokens)
	pos := make([]int, 0, N)
	for _, s := range segs {
		for i := 0; i < s.n; i++ {
			pos = append(pos, s.past+i)
		}
	}
	x := make([]F, N*d)
	kernels.Embed(x, m.wte, m.wpe, tokens, pos, d)
	h := make([]F, N*d)
	qkv := make([]F, N*3*d)
	att := make([]F, N*d)
	f := make([]F, N*4*d)
	for l := range m.layers {
		L := &m.layers[l]
		kernels.LayerNorm(h, x, L.ln1G, L.ln1B, d, m.eps, nil, nil)
		kernels.Linear(qkv, h, L.attnW, L.attnB, N, d, 3*d, false, false)
		m.attention(l, att, qkv, segs)
		kernels.Linear(x, att, L.projW, L.projB, N, d, d, false, true)
		kernels.LayerNorm(h, x, L.ln2G, L.ln2B, d, m.eps, nil, nil)
		kernels.Linear(f, h, L.fcW, L.fcB, N, d, 4*d, false, false)
		kernels.Gelu(f, nil, f)
		kernels.Linear(x, f, L.fc2W, L.fc2B, N, 4*d, d, false, true)
	}
	return x
}

// attention runs causal multi-head self-attention of every segment into out [N, d] (one
// kernels.Attention per segment and head), storing the segments' keys and values in their caches.
func (m *infModel[F]) attention(l int, out, qkv []F, segs []infSeg[F]) {
	d, hd := m.d, m.hd
	r0s := make([]int, len(segs))
	r0, work := 0, 0
	for i, s := range segs {
		r0s[i] = r0
		if s.kv != nil {
			kl, vl := s.kv.k[l], s.kv.v[l]
			for j := 0; j < s.n; j++ {
				src := qkv[(r0+j)*3*d:]
				copy(kl[(s.past+j)*d:(s.past+j+1)*d], src[d:2*d])
				copy(vl[(s.past+j)*d:(s.past+j+1)*d], src[2*d:3*d])
			}
		}
		r0 += s.n
		work += s.n * (s.past + s.n)
	}
	jobs := len(segs) * m.nh
	minPer := jobs // one goroutine unless there is enough work
	if work*d >= 1<<16 {
		minPer = 1
	}
	kernels.For(jobs, minPer, func(_, lo, hi int) {
		var probs []F
		for j := lo; j < hi; j++ {
			si, h := j/m.nh, j%m.nh
			s := segs[si]
			q := qkv[r0s[si]*3*d+h*hd:]
			k, v, ldk := q[d:], q[2*d:], 3*d
			if s.kv != nil {
				k, v, ldk = s.kv.k[l][h*hd:], s.kv.v[l][h*hd:], d
			}
			if need := s.n * (s.past + s.n); cap(probs) < need {
				probs = make([]F, need)
			}
			kernels.Attention(out[r0s[si]*d+h*hd:], d, q, 3*d, k, v, ldk, s.n, s.past, hd, probs[:s.n*(s.past+s.n)], nil)
		}
	})
}

// logits applies ln_f to the rows of hidden [n, d] and returns their logits [n, V] in F.
func (m *infModel[F]) logits(hidden []F, n int) []F {
	d, V := m.d, m.vocab
	h := make([]F, n*d)
	kernels.LayerNorm(h, hidden[:n*d], m.lnfG, m.lnfB, d, m.eps, nil, nil)
	out := make([]F, n*V)
	kernels.Linear(out, h, m.wte, nil, n, d, V, true, false)
	return out
}

// rows64 splits logits [n, V] into float64 rows.
func rows64[F kernels.Float](lg []F, V int) [][]float64 {
	n := len(lg) / V
	flat := make([]float64, len(lg))
	for i, v := range lg {
		flat[i] = float64(v)
	}
	rows := make([][]float64, n)
	for i := range rows {
		rows[i] = flat[i*V : (i+1)*V : (i+1)*V]
	}
	return rows
}

func (m *infModel[F]) logitsAll(tokens []int) [][]float64 {
	x := m.forward(tokens, []infSeg[F]{{n: len(tokens)}})
	return rows64(m.logits(x, len(tokens)), m.vocab)
}

func (m *infModel[F]) tokenLogProbs(prompts, responses [][]int) [][]float64 {
	out := make([][]float64, len(prompts))
	// Pack consecutive sequences into chunks.
	type chunk struct{ lo, hi int }
	var chunks []chunk
	budget := max(infChunkFloats/(4*m.d), 1)
	for lo := 0; lo < len(prompts); {
		hi, n := lo, 0
		for hi < len(prompts) {
			l := len(prompts[hi]) + len(responses[hi])
			if hi > lo && n+l > budget {
				break
			}
			n += l
			hi++
		}
		chunks = append(chunks, chunk{lo, hi})
		lo = hi
	}
	runChunk := func(c chunk) {
		var tokens []int
		var segs []infSeg[F]
		for i := c.lo; i < c.hi; i++ {
			out[i] = []float64{}
			if len(responses[i]) == 0 {
				continue
			}
			tokens = append(tokens, prompts[i]...)
			tokens = append(tokens, responses[i]...)
			segs = append(segs, infSeg[F]{n: len(prompts[i]) + len(responses[i])})
		}
		if len(tokens) == 0 {
			return
		}
		x := m.forward(tokens, segs)
		// Gather the hidden states that predict response tokens.
		d := m.d
		var sel []F
		r0 := 0
		for i := c.lo; i < c.hi; i++ {
			lp, lr := len(prompts[i]), len(responses[i])
			if lr == 0 {
				continue
			}
			sel = append(sel, x[(r0+lp-1)*d:(r0+lp+lr-1)*d]...)
			r0 += lp + lr
		}
		lg := m.logits(sel, len(sel)/d)
		V, k := m.vocab, 0
		for i := c.lo; i < c.hi; i++ {
			lps := make([]float64, len(responses[i]))
			for j, tok := range responses[i] {
				lps[j] = kernels.LogSoftmaxAt(lg[k*V:(k+1)*V], tok)
				k++
			}
			out[i] = lps
		}
	}
	// Chunks run on the kernels' workers; each chunk's kernels may split further.
	var mu sync.Mutex
	next := 0
	kernels.For(len(chunks), 1, func(_, _, _ int) {
		for {
			mu.Lock()
			i := next
			next++
			mu.Unlock()
			if i >= len(chunks) {
				return
			}
			runChunk(chunks[i])
		}
	})
	return out
}

// infCache is the KV cache in precision F.
type infCache[F kernels.Float] struct {
	m    *infModel[F]
	rows []infKV[F]
}

func (m *infModel[F]) newCache(n int) infCacheEngine {
	return &infCache[F]{m: m, rows: make([]infKV[F], n)}
}

func (c *infCache[F]) length(row int) int { return c.rows[row].n }
func (c *infCache[F]) reset(row int)      { c.rows[row].n = 0 }

func (c *infCache[F]) prefill(row int, tokens []int) []float64 {
	m := c.m
	kv := &c.rows[row]
	kv.n = 0
	kv.reserve(len(m.layers), m.d, len(tokens), m.nPos)
	n := len(tokens)
	x := m.forward(tokens, []infSeg[F]{{n: n, kv: kv}})
	kv.n = n
	return rows64(m.logits(x[(n-1)*m.d:], 1), m.vocab)[0]
}

func (c *infCache[F]) step(rows, tokens []int) [][]float64 {
	m := c.m
	segs := make([]infSeg[F], len(rows))
	for i, r := range rows {
		kv := &c.rows[r]
		kv.reserve(len(m.layers), m.d, kv.n+1, m.nPos)
		segs[i] = infSeg[F]{n: 1, past: kv.n, kv: kv}
	}
	x := m.forward(tokens, segs)
	for _, r := range rows {
		c.rows[r].n++
	}
	return rows64(m.logits(x, len(rows)), m.vocab)
}
