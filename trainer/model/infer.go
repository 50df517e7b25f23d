package model

import (
	"fmt"
	"math"
	"runtime"
	"sync"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"

	"github.com/bpo-dev/bpo/trainer/sample"
)

// Inference is a pure-Go, gradient-free forward pass of a GPT-2 model, for sampling
// (through a KV cache) and for scoring sequences. Matrix products run on [T, d] blocks
// with gonum's BLAS (Dgemm). It is safe for concurrent use; a cache is not.
//
// Inference keeps references to the weights' data: do not modify the weights while an
// Inference built on them is in use.
type Inference struct {
	cfg    Config
	d      int // n_embd
	nh     int // n_head
	hd     int // head dim
	vocab  int
	nPos   int
	eps    float64
	scale  float64 // 1/sqrt(hd)
	wte    []float64
	wpe    []float64
	layers []infLayer
	lnfG   []float64
	lnfB   []float64
}

type infLayer struct {
	ln1G, ln1B   []float64
	attnW, attnB []float64 // [d, 3d], [3d]
	projW, projB []float64 // [d, d], [d]
	ln2G, ln2B   []float64
	fcW, fcB     []float64 // [d, 4d], [4d]
	fc2W, fc2B   []float64 // [4d, d], [d]
}

var _ sample.Model = (*Inference)(nil)

// NewInference prepares the inference path for w. It panics if w is not valid
// (see (*Weights).Validate); weights from LoadWeights, Init or MergeMean are.
func NewInference(w *Weights) *Inference {
	if err := w.Validate(); err != nil {
		panic(fmt.Sprintf("model.NewInference: %v", err))
	}
	c := w.Config
	m := &Inference{
		cfg:   c,
		d:     c.NEmbd,
		nh:    c.NHead,
		hd:    c.NEmbd / c.NHead,
		vocab: c.VocabSize,
		nPos:  c.NPositions,
		eps:   c.LayerNormEpsilon,
		wte:   w.Tensors["wte.weight"].Data,
		wpe:   w.Tensors["wpe.weight"].Data,
		lnfG:  w.Tensors["ln_f.weight"].Data,
		lnfB:  w.Tensors["ln_f.bias"].Data,
	}
	m.scale = 1 / math.Sqrt(float64(m.hd))
	for l := 0; l < c.NLayer; l++ {
		p := fmt.Sprintf("h.%d.", l)
		g := func(n string) []float64 { return w.Tensors[p+n].Data }
		m.layers = append(m.layers, infLayer{
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

// Config returns the model's config.
func (m *Inference) Config() Config { return m.cfg }

// VocabSize is the number of logits per position.
func (m *Inference) VocabSize() int { return m.vocab }

// ContextLen is n_positions, the maximum prompt + generated length.
func (m *Inference) ContextLen() int { return m.nPos }

// ---- the forward pass ----

// infSeg is one sequence inside a forward block: n new tokens (consecutive rows of the
// block) at positions past..past+n-1. With kv == nil the keys and values are those of
// the block itself (past must be 0); otherwise they are appended to kv and attention
// runs over kv's first past+n positions.
type infSeg struct {
	n, past int
	kv      *infKV
}

// infKV is the key/value cache of one sequence: per layer, [cap, d] keys and values.
type infKV struct {
	n    int // positions filled
	k, v [][]float64
}

func (kv *infKV) reserve(nLayer, d, need, limit int) {
	if len(kv.k) == 0 {
		kv.k = make([][]float64, nLayer)
		kv.v = make([][]float64, nLayer)
	}
	if len(kv.k[0]) >= need*d {
		return
	}
	c := max(need, 2*len(kv.k[0])/d, 16)
	c = min(c, limit)
	for l := 0; l < nLayer; l++ {
		nk := make([]float64, c*d)
		copy(nk, kv.k[l][:kv.n*d])
		kv.k[l] = nk
		nv := make([]float64, c*d)
		copy(nv, kv.v[l][:kv.n*d])
		kv.v[l] = nv
	}
}

// forward runs the transformer over a block of tokens (segments laid out in order) and
// returns the final hidden states [N, d] before ln_f. Caches of segments are updated.
func (m *Inference) forward(tokens []int, segs []infSeg) []float64 {
	d, N := m.d, len(tokens)
	x := make([]float64, N*d)
	{
		r := 0
		for _, s := range segs {
			for i := 0; i < s.n; i++ {
				tok, pos := tokens[r], s.past+i
				xr := x[r*d : (r+1)*d]
				te := m.wte[tok*d : (tok+1)*d]
				pe := m.wpe[pos*d : (pos+1)*d]
				for j := range xr {
					xr[j] = te[j] + pe[j]
				}
				r++
			}
		}
	}
	h := make([]float64, N*d)
	qkv := make([]float64, N*3*d)
	att := make([]float64, N*d)
	f := make([]float64, N*4*d)
	for l := range m.layers {
		L := &m.layers[l]
		infLayerNorm(h, x, L.ln1G, L.ln1B, d, m.eps)
		infLinear(qkv, h, L.attnW, L.attnB, N, d, 3*d, false)
		m.attention(l, att, qkv, segs)
		infLinear(x, att, L.projW, L.projB, N, d, d, true)
		infLayerNorm(h, x, L.ln2G, L.ln2B, d, m.eps)
		infLinear(f, h, L.fcW, L.fcB, N, d, 4*d, false)
		infGELU(f)
		infLinear(x, f, L.fc2W, L.fc2B, N, 4*d, d, true)
	}
	return x
}

// attention computes causal multi-head self-attention of every segment into out
// [N, d], storing the segments' keys and values in their caches.
func (m *Inference) attention(l int, out, qkv []float64, segs []infSeg) {
	d := m.d
	type job struct {
		r0  int
		seg infSeg
	}
	jobs := make([]job, 0, len(segs))
	r0 := 0
	for _, s := range segs {
		if s.kv != nil {
			kl, vl := s.kv.k[l], s.kv.v[l]
			for i := 0; i < s.n; i++ {
				src := qkv[(r0+i)*3*d:]
				copy(kl[(s.past+i)*d:(s.past+i+1)*d], src[d:2*d])
				copy(vl[(s.past+i)*d:(s.past+i+1)*d], src[2*d:3*d])
			}
		}
		jobs = append(jobs, job{r0, s})
		r0 += s.n
	}
	run := func(j job) {
		s := j.seg
		q := qkv[j.r0*3*d:]
		o := out[j.r0*d:]
		var k, v []float64
		kStride := 3 * d
		if s.kv != nil {
			k, v, kStride = s.kv.k[l], s.kv.v[l], d
		} else {
			k, v = q[d:], q[2*d:]
		}
		if s.n == 1 {
			m.attendOne(q, k, v, kStride, s.past+1, o)
		} else {
			m.attendBlock(q, k, v, kStride, s.n, s.past, o)
		}
	}
	// Parallelise across segments when there is enough work.
	work := 0
	for _, j := range jobs {
		work += j.seg.n * (j.seg.past + j.seg.n)
	}
	workers := min(runtime.GOMAXPROCS(0), len(jobs))
	if workers <= 1 || work*d < 1<<16 {
		for _, j := range jobs {
			run(j)
		}
		return
	}
	var wg sync.WaitGroup
	next := make(chan job, len(jobs))
	for _, j := range jobs {
		next <- j
	}
	close(next)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range next {
				run(j)
			}
		}()
	}
	wg.Wait()
}

// attendOne is attention for one query (row q, stride irrelevant) over T keys/values
// with row stride kStride; writes o[:d].
func (m *Inference) attendOne(q, k, v []float64, kStride, T int, o []float64) {
	hd := m.hd
	p := make([]float64, T)
	for h := 0; h < m.nh; h++ {
		qh := q[h*hd : (h+1)*hd]
		mx := math.Inf(-1)
		for t := 0; t < T; t++ {
			kt := k[t*kStride+h*hd : t*kStride+(h+1)*hd]
			var s float64
			for i, qi := range qh {
				s += qi * kt[i]
			}
			s *= m.scale
			p[t] = s
			if s > mx {
				mx = s
			}
		}
		var z float64
		for t := range p {
			e := math.Exp(p[t] - mx)
			p[t] = e
			z += e
		}
		oh := o[h*hd : (h+1)*hd]
		clear(oh)
		for t, pt := range p {
			pt /= z
			vt := v[t*kStride+h*hd : t*kStride+(h+1)*hd]
			for i := range oh {
				oh[i] += pt * vt[i]
			}
		}
	}
}

// attendBlock is causal attention for n queries (rows of q with stride 3d) at
// positions past..past+n-1 over past+n keys/values (row stride kStride); writes n rows
// of o (stride d).
func (m *Inference) attendBlock(q, k, v []float64, kStride, n, past int, o []float64) {
	d, hd := m.d, m.hd
	T := past + n
	s := make([]float64, n*T)
	for h := 0; h < m.nh; h++ {
		blas64.Gemm(blas.NoTrans, blas.Trans, m.scale,
			blas64.General{Rows: n, Cols: hd, Stride: 3 * d, Data: q[h*hd:]},
			blas64.General{Rows: T, Cols: hd, Stride: kStride, Data: k[h*hd:]},
			0, blas64.General{Rows: n, Cols: T, Stride: T, Data: s})
		for i := 0; i < n; i++ {
			row := s[i*T : (i+1)*T]
			lim := past + i + 1 // keys 0..past+i are visible
			mx := math.Inf(-1)
			for _, x := range row[:lim] {
				if x > mx {
					mx = x
				}
			}
			var z float64
			for t := 0; t < lim; t++ {
				e := math.Exp(row[t] - mx)
				row[t] = e
				z += e
			}
			inv := 1 / z
			for t := 0; t < lim; t++ {
				row[t] *= inv
			}
			clear(row[lim:])
		}
		blas64.Gemm(blas.NoTrans, blas.NoTrans, 1,
			blas64.General{Rows: n, Cols: T, Stride: T, Data: s},
			blas64.General{Rows: T, Cols: hd, Stride: kStride, Data: v[h*hd:]},
			0, blas64.General{Rows: n, Cols: hd, Stride: d, Data: o[h*hd:]})
	}
}

// infLinear computes y = x·W + b for x [N, in], W [in, out]; with accumulate,
// y += x·W + b (the residual connection).
func infLinear(y, x, W, b []float64, N, in, out int, accumulate bool) {
	for r := 0; r < N; r++ {
		yr := y[r*out : (r+1)*out]
		if accumulate {
			for j, bj := range b {
				yr[j] += bj
			}
		} else {
			copy(yr, b)
		}
	}
	blas64.Gemm(blas.NoTrans, blas.NoTrans, 1,
		blas64.General{Rows: N, Cols: in, Stride: in, Data: x},
		blas64.General{Rows: in, Cols: out, Stride: out, Data: W},
		1, blas64.General{Rows: N, Cols: out, Stride: out, Data: y})
}

// infLayerNorm writes LayerNorm(x) row by row into y (biased variance, as torch).
func infLayerNorm(y, x, g, b []float64, d int, eps float64) {
	for r := 0; r < len(x)/d; r++ {
		xr, yr := x[r*d:(r+1)*d], y[r*d:(r+1)*d]
		var mean float64
		for _, v := range xr {
			mean += v
		}
		mean /= float64(d)
		var vr float64
		for _, v := range xr {
			c := v - mean
			vr += c * c
		}
		vr /= float64(d)
		inv := 1 / math.Sqrt(vr+eps)
		for j, v := range xr {
			yr[j] = (v-mean)*inv*g[j] + b[j]
		}
	}
}

// infGELU applies GPT-2's gelu_new in place:
// 0.5·x·(1 + tanh(sqrt(2/π)·(x + 0.044715·x³))), computed as x·σ(2u), which is the
// same function (1 + tanh(u) = 2σ(2u)).
func infGELU(x []float64) {
	const c = 0.7978845608028654 // sqrt(2/pi)
	for i, v := range x {
		u := c * (v + 0.044715*v*v*v)
		x[i] = v / (1 + math.Exp(-2*u))
	}
}

// logits applies ln_f to the rows of hidden [n, d] and returns their logits [n][V].
func (m *Inference) logits(hidden []float64, n int) [][]float64 {
	d, V := m.d, m.vocab
	h := make([]float64, n*d)
	infLayerNorm(h, hidden[:n*d], m.lnfG, m.lnfB, d, m.eps)
	out := make([]float64, n*V)
	blas64.Gemm(blas.NoTrans, blas.Trans, 1,
		blas64.General{Rows: n, Cols: d, Stride: d, Data: h},
		blas64.General{Rows: V, Cols: d, Stride: d, Data: m.wte},
		0, blas64.General{Rows: n, Cols: V, Stride: V, Data: out})
	rows := make([][]float64, n)
	for i := range rows {
		rows[i] = out[i*V : (i+1)*V : (i+1)*V]
	}
	return rows
}

func (m *Inference) checkTokens(tokens []int) error {
	for i, t := range tokens {
		if t < 0 || t >= m.vocab {
			return fmt.Errorf("token %d at index %d outside the vocabulary [0,%d)", t, i, m.vocab)
		}
	}
	return nil
}

// Logits runs the full forward pass over tokens without a cache and returns the
// logits at every position ([len(tokens)][V]). It panics on an empty or over-long
// sequence or an out-of-vocabulary token.
func (m *Inference) Logits(tokens []int) [][]float64 {
	if len(tokens) == 0 || len(tokens) > m.nPos {
		panic(fmt.Sprintf("model.Logits: %d tokens, want 1..n_positions %d", len(tokens), m.nPos))
	}
	if err := m.checkTokens(tokens); err != nil {
		panic("model.Logits: " + err.Error())
	}
	x := m.forward(tokens, []infSeg{{n: len(tokens)}})
	return m.logits(x, len(tokens))
}

// ---- scoring ----

// infChunkFloats bounds the MLP activation buffer (N·4d floats) of one scoring chunk.
// A variable so that tests can force several chunks.
var infChunkFloats = 1 << 21

// TokenLogProbs returns, for each pair i, the log-probability of every token of
// responses[i] given prompts[i] and the response tokens before it. Prompts must be
// non-empty; len(prompt)+len(response) must not exceed n_positions. Sequences are
// packed into blocks for the matrix products and blocks run in parallel.
func (m *Inference) TokenLogProbs(prompts, responses [][]int) ([][]float64, error) {
	if len(prompts) != len(responses) {
		return nil, fmt.Errorf("model: %d prompts but %d responses", len(prompts), len(responses))
	}
	for i := range prompts {
		lp, lr := len(prompts[i]), len(responses[i])
		if lp == 0 {
			return nil, fmt.Errorf("model: prompt %d is empty (the first response token needs a context)", i)
		}
		if lp+lr > m.nPos {
			return nil, fmt.Errorf("model: sequence %d has length %d (prompt %d + response %d), more than n_positions %d", i, lp+lr, lp, lr, m.nPos)
		}
		if err := m.checkTokens(prompts[i]); err != nil {
			return nil, fmt.Errorf("model: prompt %d: %w", i, err)
		}
		if err := m.checkTokens(responses[i]); err != nil {
			return nil, fmt.Errorf("model: response %d: %w", i, err)
		}
	}
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
		var segs []infSeg
		for i := c.lo; i < c.hi; i++ {
			if len(responses[i]) == 0 {
				continue
			}
			tokens = append(tokens, prompts[i]...)
			tokens = append(tokens, responses[i]...)
			segs = append(segs, infSeg{n: len(prompts[i]) + len(responses[i])})
		}
		for i := c.lo; i < c.hi; i++ {
			out[i] = []float64{}
		}
		if len(tokens) == 0 {
			return
		}
		x := m.forward(tokens, segs)
		// Gather the hidden states that predict response tokens.
		d := m.d
		var sel []float64
		r0 := 0
		for i := c.lo; i < c.hi; i++ {
			lp, lr := len(prompts[i]), len(responses[i])
			if lr == 0 {
				continue
			}
			sel = append(sel, x[(r0+lp-1)*d:(r0+lp+lr-1)*d]...)
			r0 += lp + lr
		}
		rows := m.logits(sel, len(sel)/d)
		k := 0
		for i := c.lo; i < c.hi; i++ {
			lr := len(responses[i])
			lps := make([]float64, lr)
			for j, tok := range responses[i] {
				lps[j] = infLogSoftmaxAt(rows[k], tok)
				k++
			}
			out[i] = lps
		}
	}
	workers := min(runtime.GOMAXPROCS(0), len(chunks))
	if workers <= 1 {
		for _, c := range chunks {
			runChunk(c)
		}
		return out, nil
	}
	next := make(chan chunk, len(chunks))
	for _, c := range chunks {
		next <- c
	}
	close(next)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range next {
				runChunk(c)
			}
		}()
	}
	wg.Wait()
	return out, nil
}

// SequenceLogProbs returns, for each pair i, the sum of the log-probabilities of the
// tokens of responses[i] given prompts[i] (prompt tokens are not scored) and the
// number of response tokens. See TokenLogProbs for the constraints.
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

// infLogSoftmaxAt returns log softmax(row)[k].
func infLogSoftmaxAt(row []float64, k int) float64 {
	mx := math.Inf(-1)
	for _, v := range row {
		if v > mx {
			mx = v
		}
	}
	var z float64
	for _, v := range row {
		z += math.Exp(v - mx)
	}
	return row[k] - mx - math.Log(z)
}

// ---- KV cache (sample.Cache) ----

// KVCache is the decoding state of a batch of sequences: per row, the keys and values
// of every layer at the positions seen so far. Not safe for concurrent use.
type KVCache struct {
	m    *Inference
	rows []infKV
}

var _ sample.Cache = (*KVCache)(nil)

// NewCache returns an empty KV cache for n rows (sample.Model).
func (m *Inference) NewCache(n int) sample.Cache { return m.NewKVCache(n) }

// NewKVCache is NewCache with the concrete type.
func (m *Inference) NewKVCache(n int) *KVCache {
	return &KVCache{m: m, rows: make([]infKV, n)}
}

// Len returns the number of positions row holds.
func (c *KVCache) Len(row int) int { return c.rows[row].n }

// Reset empties a row (keeping its memory).
func (c *KVCache) Reset(row int) { c.rows[row].n = 0 }

// Prefill resets row and runs its prompt (at least one token, at most n_positions),
// returning the logits that follow the last token. It panics on bad input.
func (c *KVCache) Prefill(row int, tokens []int) []float64 {
	m := c.m
	if row < 0 || row >= len(c.rows) {
		panic(fmt.Sprintf("model.KVCache.Prefill: row %d outside [0,%d)", row, len(c.rows)))
	}
	if len(tokens) == 0 || len(tokens) > m.nPos {
		panic(fmt.Sprintf("model.KVCache.Prefill: row %d: %d prompt tokens, want 1..n_positions %d", row, len(tokens), m.nPos))
	}
	if err := m.checkTokens(tokens); err != nil {
		panic(fmt.Sprintf("model.KVCache.Prefill: row %d: %v", row, err))
	}
	kv := &c.rows[row]
	kv.n = 0
	kv.reserve(len(m.layers), m.d, len(tokens), m.nPos)
	n := len(tokens)
	x := m.forward(tokens, []infSeg{{n: n, kv: kv}})
	kv.n = n
	return m.logits(x[(n-1)*m.d:], 1)[0]
}

// Step appends tokens[i] to row rows[i] (rows distinct) and returns each row's
// next-token logits. A row that was never prefilled starts at position 0. It panics
// if a row would exceed n_positions or a token is out of the vocabulary.
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
	segs := make([]infSeg, len(rows))
	seen := make(map[int]bool, len(rows))
	for i, r := range rows {
		if r < 0 || r >= len(c.rows) {
			panic(fmt.Sprintf("model.KVCache.Step: row %d outside [0,%d)", r, len(c.rows)))
		}
		if seen[r] {
			panic(fmt.Sprintf("model.KVCache.Step: row %d appears twice", r))
		}
		seen[r] = true
		kv := &c.rows[r]
		if kv.n+1 > m.nPos {
			panic(fmt.Sprintf("model.KVCache.Step: row %d is at position %d, n_positions is %d", r, kv.n, m.nPos))
		}
		kv.reserve(len(m.layers), m.d, kv.n+1, m.nPos)
		segs[i] = infSeg{n: 1, past: kv.n, kv: kv}
	}
	x := m.forward(tokens, segs)
	for _, r := range rows {
		c.rows[r].n++
	}
	return m.logits(x, len(rows))
}
