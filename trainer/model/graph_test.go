package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/bpo-dev/bpo/trainer/model/kernels"
)

// ---------- a naive, loop-by-loop reference forward pass (test only) ----------

func grNaiveLinear(x []float64, W, b *Tensor, A, B *Tensor, s float64) []float64 {
	in, out := W.Shape[0], W.Shape[1]
	y := append([]float64(nil), b.Data...)
	for j := 0; j < out; j++ {
		for i := 0; i < in; i++ {
			y[j] += x[i] * W.Data[i*out+j]
		}
	}
	if A != nil && s != 0 {
		r := A.Shape[1]
		xa := make([]float64, r)
		for k := 0; k < r; k++ {
			for i := 0; i < in; i++ {
				xa[k] += x[i] * A.Data[i*r+k]
			}
		}
		for j := 0; j < out; j++ {
			for k := 0; k < r; k++ {
				y[j] += s * xa[k] * B.Data[k*out+j]
			}
		}
	}
	return y
}

func grNaiveLN(x []float64, g, b *Tensor, eps float64) []float64 {
	var m, v float64
	for _, e := range x {
		m += e
	}
	m /= float64(len(x))
	for _, e := range x {
		v += (e - m) * (e - m)
	}
	v /= float64(len(x))
	y := make([]float64, len(x))
	for i, e := range x {
		y[i] = (e-m)/math.Sqrt(v+eps)*g.Data[i] + b.Data[i]
	}
	return y
}

// grNaiveLogits is an independent per-sequence GPT-2 forward: logits[t][v].
func grNaiveLogits(w *Weights, a *Adapter, toks []int) [][]float64 {
	cfg := w.Config
	d, H := cfg.NEmbd, cfg.NHead
	dh := d / H
	W := func(n string) *Tensor { return w.Tensors[n] }
	var s float64
	lora := func(n string) (*Tensor, *Tensor) {
		if a == nil {
			return nil, nil
		}
		return a.Tensors[n+".lora_A"], a.Tensors[n+".lora_B"]
	}
	if a != nil {
		s = a.Scale()
	}
	lin := func(x []float64, n string) []float64 {
		A, B := lora(n)
		return grNaiveLinear(x, W(n+".weight"), W(n+".bias"), A, B, s)
	}
	T := len(toks)
	x := make([][]float64, T)
	for t, tok := range toks {
		x[t] = make([]float64, d)
		for j := range d {
			x[t][j] = W("wte.weight").Data[tok*d+j] + W("wpe.weight").Data[t*d+j]
		}
	}
	for l := 0; l < cfg.NLayer; l++ {
		p := fmt.Sprintf("h.%d.", l)
		qkv := make([][]float64, T)
		for t := range T {
			qkv[t] = lin(grNaiveLN(x[t], W(p+"ln_1.weight"), W(p+"ln_1.bias"), cfg.LayerNormEpsilon), p+"attn.c_attn")
		}
		for t := range T {
			att := make([]float64, d)
			for h := 0; h < H; h++ {
				sc := make([]float64, t+1)
				mx := math.Inf(-1)
				for u := 0; u <= t; u++ {
					for j := 0; j < dh; j++ {
						sc[u] += qkv[t][h*dh+j] * qkv[u][d+h*dh+j]
					}
					sc[u] /= math.Sqrt(float64(dh))
					mx = math.Max(mx, sc[u])
				}
				var z float64
				for u := range sc {
					sc[u] = math.Exp(sc[u] - mx)
					z += sc[u]
				}
				for u := range sc {
					for j := 0; j < dh; j++ {
						att[h*dh+j] += sc[u] / z * qkv[u][2*d+h*dh+j]
					}
				}
			}
			o := lin(att, p+"attn.c_proj")
			for j := range d {
				x[t][j] += o[j] // x[t] is not read again by later positions' attention (qkv is cached)
			}
		}
		for t := range T {
			f := lin(grNaiveLN(x[t], W(p+"ln_2.weight"), W(p+"ln_2.bias"), cfg.LayerNormEpsilon), p+"mlp.c_fc")
			for i, v := range f {
				f[i] = 0.5 * v * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(v+0.044715*v*v*v)))
			}
			o := lin(f, p+"mlp.c_proj")
			for j := range d {
				x[t][j] += o[j]
			}
		}
	}
	logits := make([][]float64, T)
	for t := range T {
		h := grNaiveLN(x[t], W("ln_f.weight"), W("ln_f.bias"), cfg.LayerNormEpsilon)
		logits[t] = make([]float64, cfg.VocabSize)
		for v := range logits[t] {
			for j := range d {
				logits[t][v] += h[j] * W("wte.weight").Data[v*d+j]
			}
		}
	}
	return logits
}

func grNaiveLogProb(w *Weights, a *Adapter, toks []int, mask []bool) (float64, int) {
	lg := grNaiveLogits(w, a, toks)
	var s float64
	var n int
	for t := 1; t < len(toks); t++ {
		if t < len(mask) && mask[t] {
			s += kernels.LogSoftmaxAt(lg[t-1], toks[t])
			n++
		}
	}
	return s, n
}

func grClose(a, b, tol float64) bool {
	return math.Abs(a-b) <= tol*math.Max(1, math.Max(math.Abs(a), math.Abs(b)))
}

// ---------- tests ----------

func TestGraphForwardMatchesNaive(t *testing.T) {
	rng := rand.New(rand.NewPCG(20, 1))
	cfg := grTinyConfig()
	base := grRandomWeights(rng, cfg)
	ad := grRandomAdapter(rng, cfg, 3, 6, 0.3)
	const B, T = 3, 7
	batch := grRandomBatch(rng, cfg, B, T)
	batch.Tokens[1] = batch.Tokens[1][:4] // padding
	batch.Mask[1] = batch.Mask[1][:3]     // mask shorter than tokens
	tr, err := NewTrainer(base, 3, B, T, Objective{Precision: Float64})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []*Adapter{nil, ad} {
		sums, counts, err := tr.LogProbs(a, batch)
		if err != nil {
			t.Fatal(err)
		}
		logits, err := tr.Logits(a, batch)
		if err != nil {
			t.Fatal(err)
		}
		var worst float64
		for b := range B {
			want, n := grNaiveLogProb(base, a, batch.Tokens[b], batch.Mask[b])
			if n != counts[b] || !grClose(sums[b], want, 1e-12) {
				t.Errorf("adapter=%v seq %d: log-prob %.15g (%d tokens), naive %.15g (%d)", a != nil, b, sums[b], counts[b], want, n)
			}
			nl := grNaiveLogits(base, a, batch.Tokens[b])
			for p := range nl {
				for v := range nl[p] {
					got := logits.Data[(b*T+p)*cfg.VocabSize+v]
					worst = math.Max(worst, math.Abs(got-nl[p][v]))
				}
			}
		}
		t.Logf("adapter=%v: max |logit - naive| = %.3g", a != nil, worst)
		if worst > 1e-11 {
			t.Errorf("logits differ from the naive forward by %.3g", worst)
		}
	}
}

// At the start of a phase the policy equals the reference: h = 0, so DPO = ln 2,
// IPO = (1/(2β))², SLiC = 1 (B = 0 adapter, reference = the base model's own log-probs).
func TestGraphLossAtZeroMargin(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 1))
	cfg := grTinyConfig()
	base := grRandomWeights(rng, cfg)
	ad := grZeroBAdapter(rng, cfg, 2, 4)
	const beta = 0.1
	batch := grRandomBatch(rng, cfg, 4, 6)
	for _, tc := range []struct {
		kind    string
		lenNorm bool
		want    float64
	}{
		{"DPO", false, math.Ln2}, {"IPO", false, 25}, {"IPO", true, 25}, {"SLiC", false, 1},
	} {
		tr, err := NewTrainer(base, 2, 4, 6, Objective{Loss: grTestLoss(tc.kind, beta), LengthNormalize: tc.lenNorm, Precision: Float64})
		if err != nil {
			t.Fatal(err)
		}
		ref, _, err := tr.LogProbs(nil, batch)
		if err != nil {
			t.Fatal(err)
		}
		out, err := tr.Step(ad, batch, ref)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s (length-normalised %v) at h=0: %.17g (want %.17g)", tc.kind, tc.lenNorm, out.Loss, tc.want)
		if !grClose(out.Loss, tc.want, 1e-14) {
			t.Errorf("%s at h=0: loss %.17g, want %.17g", tc.kind, out.Loss, tc.want)
		}
		if !slices.Equal(out.LogProbs, ref) {
			t.Errorf("%s: policy log-probs %v differ from the reference %v with B = 0", tc.kind, out.LogProbs, ref)
		}
		for name, g := range out.Grads {
			if name[len(name)-1] == 'A' && grMaxAbs(g.Data) != 0 {
				t.Errorf("%s: d/d%s must be 0 while B = 0", tc.kind, name)
			}
		}
	}
}

// Hand-computed losses: the reference is shifted so that h = [1, -2] exactly.
func TestGraphLossHandComputed(t *testing.T) {
	rng := rand.New(rand.NewPCG(22, 1))
	cfg := grTinyConfig()
	base := grRandomWeights(rng, cfg)
	ad := grRandomAdapter(rng, cfg, 2, 4, 0.2)
	batch := grRandomBatch(rng, cfg, 4, 6)
	const beta = 0.1
	for _, tc := range []struct {
		kind string
		want float64
	}{
		// (log(1+e^-0.1) + log(1+e^0.2)) / 2
		{"DPO", 0.7212677647275814},
		// ((1-5)² + (-2-5)²) / 2
		{"IPO", 32.5},
		// (max(0, 1-0.1) + max(0, 1+0.2)) / 2
		{"SLiC", 1.05},
	} {
		tr, err := NewTrainer(base, 2, 4, 6, Objective{Loss: grTestLoss(tc.kind, beta), Precision: Float64})
		if err != nil {
			t.Fatal(err)
		}
		pol, _, err := tr.LogProbs(ad, batch)
		if err != nil {
			t.Fatal(err)
		}
		// rows: chosen 0,1 then rejected 2,3. h_i = (pc-rc) - (pr-rr).
		ref := []float64{pol[0] - 0.75, pol[1] + 1.5, pol[2] + 0.25, pol[3] - 0.5}
		out, err := tr.Step(ad, batch, ref)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s with h=[1,-2], beta=0.1: %.17g (hand %.17g)", tc.kind, out.Loss, tc.want)
		if !grClose(out.Loss, tc.want, 1e-12) {
			t.Errorf("%s: loss %.17g, want %.17g", tc.kind, out.Loss, tc.want)
		}
	}
	// length normalisation divides policy and reference by the response counts
	tr, err := NewTrainer(base, 2, 4, 6, Objective{Loss: grTestLoss("IPO", beta), LengthNormalize: true, Precision: Float64})
	if err != nil {
		t.Fatal(err)
	}
	ref := []float64{-3, -4, -5, -6}
	out, err := tr.Step(ad, batch, ref)
	if err != nil {
		t.Fatal(err)
	}
	m := func(v []float64, c []int, i int) float64 { return v[i] / float64(c[i]) }
	p, c := out.LogProbs, out.Counts
	want := grPlainLoss("IPO", beta, []float64{m(p, c, 0), m(p, c, 1)}, []float64{m(p, c, 2), m(p, c, 3)},
		[]float64{m(ref, c, 0), m(ref, c, 1)}, []float64{m(ref, c, 2), m(ref, c, 3)})
	if !grClose(out.Loss, want, 1e-12) {
		t.Errorf("IPO length-normalised: %.17g, want %.17g", out.Loss, want)
	}
}

// Masking: a prompt or padding position never feeds the log-prob, later tokens never change
// earlier logits, and padding beyond a sequence changes nothing.
func TestGraphMasking(t *testing.T) {
	rng := rand.New(rand.NewPCG(23, 1))
	cfg := grTinyConfig()
	base := grRandomWeights(rng, cfg)
	ad := grRandomAdapter(rng, cfg, 2, 4, 0.3)
	const B, T = 2, 8
	tr, err := NewTrainer(base, 2, B, T, Objective{Precision: Float64})
	if err != nil {
		t.Fatal(err)
	}
	// row 0: prompt 0..2, response 3..5, trailing unmasked 6..7; row 1: 5 tokens + padding
	mk := func() Batch {
		return Batch{
			Tokens: [][]int{{1, 2, 3, 4, 5, 6, 7, 8}, {9, 8, 7, 6, 5}},
			Mask:   [][]bool{{false, false, false, true, true, true, false, false}, {false, false, true, true, true}},
		}
	}
	b0 := mk()
	s0, c0, err := tr.LogProbs(ad, b0)
	if err != nil {
		t.Fatal(err)
	}
	l0, _ := tr.Logits(ad, b0)
	if !slices.Equal(c0, []int{3, 3}) {
		t.Fatalf("counts %v, want [3 3]", c0)
	}

	// 1. the trailing (unmasked) tokens of row 0 and explicit padding of row 1 change: no sum moves
	b1 := mk()
	b1.Tokens[0][6], b1.Tokens[0][7] = 0, 10
	b1.Tokens[1] = append(b1.Tokens[1], 3, 3, 3)
	s1, _, err := tr.LogProbs(ad, b1)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s0, s1) {
		t.Errorf("changing unmasked trailing/padding tokens moved the log-probs: %v -> %v", s0, s1)
	}
	l1, _ := tr.Logits(ad, b1)
	V := cfg.VocabSize
	for _, rp := range [][2]int{{0, 6}, {1, 5}} { // logits before the first changed position are untouched
		for i := 0; i < rp[1]*V; i++ {
			if l0.Data[rp[0]*T*V+i] != l1.Data[rp[0]*T*V+i] {
				t.Fatalf("row %d: logit %d changed", rp[0], i)
			}
		}
	}

	// 2. a prompt token's target: changing the mask of a prompt position to a different target
	// must not matter while it stays masked out; changing a response token at t moves only
	// positions >= t.
	b2 := mk()
	b2.Tokens[0][5] = 0 // last response token of row 0
	s2, _, _ := tr.LogProbs(ad, b2)
	l2, _ := tr.Logits(ad, b2)
	if s2[0] == s0[0] || s2[1] != s0[1] {
		t.Errorf("changing a response token: row 0 must change and row 1 must not: %v -> %v", s0, s2)
	}
	for i := 0; i < 5*V; i++ {
		if l0.Data[i] != l2.Data[i] {
			t.Fatalf("a later token changed the logits of an earlier position (index %d)", i)
		}
	}
	// the log-prob of the unchanged earlier response tokens (positions 3,4) is the same: recompute
	// row 0 with only positions 3,4 masked in, in both batches
	b3a, b3b := mk(), mk()
	b3b.Tokens[0][5] = 0
	for _, b := range []*Batch{&b3a, &b3b} {
		b.Mask[0] = []bool{false, false, false, true, true}
	}
	s3a, _, _ := tr.LogProbs(ad, b3a)
	s3b, _, _ := tr.LogProbs(ad, b3b)
	if s3a[0] != s3b[0] {
		t.Errorf("earlier response log-prob changed with a later token: %v vs %v", s3a[0], s3b[0])
	}

	// 3. a longer context (more padding) gives the same numbers
	trL, err := NewTrainer(base, 2, B, T+5, Objective{Precision: Float64})
	if err != nil {
		t.Fatal(err)
	}
	sL, _, err := trL.LogProbs(ad, b0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range sL {
		if !grClose(sL[i], s0[i], 1e-13) {
			t.Errorf("seqLen %d vs %d: %v vs %v", T+5, T, sL, s0)
		}
	}
}

// Reusing the graph: repeated and interleaved calls give bit-identical results.
func TestGraphReuse(t *testing.T) {
	rng := rand.New(rand.NewPCG(24, 1))
	cfg := grTinyConfig()
	base := grRandomWeights(rng, cfg)
	ad := grRandomAdapter(rng, cfg, 2, 4, 0.3)
	ad2 := grRandomAdapter(rng, cfg, 2, 4, 0.3)
	batch := grRandomBatch(rng, cfg, 4, 6)
	tr, err := NewTrainer(base, 2, 4, 6, Objective{Loss: grTestLoss("DPO", 0.1), Precision: Float64})
	if err != nil {
		t.Fatal(err)
	}
	ref, _, _ := tr.LogProbs(nil, batch)
	o1, err := tr.Step(ad, batch, ref)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Step(ad2, grRandomBatch(rng, cfg, 4, 6), ref); err != nil {
		t.Fatal(err)
	}
	if _, _, err := tr.LogProbs(ad2, batch); err != nil {
		t.Fatal(err)
	}
	o2, err := tr.Step(ad, batch, ref)
	if err != nil {
		t.Fatal(err)
	}
	if o1.Loss != o2.Loss || !slices.Equal(o1.LogProbs, o2.LogProbs) {
		t.Fatalf("repeat step differs: %v %v vs %v %v", o1.Loss, o1.LogProbs, o2.Loss, o2.LogProbs)
	}
	for k, g := range o1.Grads {
		if !slices.Equal(g.Data, o2.Grads[k].Data) {
			t.Fatalf("repeat step: gradient %s differs", k)
		}
	}
	if len(o1.Grads) != 2*len(LoRATargets)*cfg.NLayer {
		t.Errorf("%d gradients, want %d", len(o1.Grads), 2*len(LoRATargets)*cfg.NLayer)
	}
}

func TestGraphErrors(t *testing.T) {
	rng := rand.New(rand.NewPCG(25, 1))
	cfg := grTinyConfig()
	base := grRandomWeights(rng, cfg)
	if _, err := NewTrainer(base, 2, 3, 6, Objective{Loss: grTestLoss("DPO", 0.1), Precision: Float64}); err == nil {
		t.Error("odd preference batch accepted")
	}
	if _, err := NewTrainer(base, 2, 2, cfg.NPositions+1, Objective{Precision: Float64}); err == nil {
		t.Error("seqLen beyond n_positions accepted")
	}
	if _, err := NewTrainer(base, 0, 2, 6, Objective{Precision: Float64}); err == nil {
		t.Error("rank 0 accepted")
	}
	bad := &Weights{Config: cfg, Tensors: map[string]*Tensor{}}
	for k, v := range base.Tensors {
		bad.Tensors[k] = v
	}
	delete(bad.Tensors, "h.1.mlp.c_fc.bias")
	if _, err := NewTrainer(bad, 2, 2, 6, Objective{Precision: Float64}); err == nil {
		t.Error("missing tensor accepted")
	}
	tr, err := NewTrainer(base, 2, 2, 6, Objective{Loss: grTestLoss("IPO", 0.1), LengthNormalize: true, Precision: Float64})
	if err != nil {
		t.Fatal(err)
	}
	ad := grRandomAdapter(rng, cfg, 2, 4, 0.3)
	ok := grRandomBatch(rng, cfg, 2, 6)
	for name, b := range map[string]Batch{
		"too long":      {Tokens: [][]int{{1, 2, 3, 4, 5, 6, 7}, {1}}, Mask: [][]bool{{}, {}}},
		"bad token":     {Tokens: [][]int{{1, 11}, {1}}, Mask: [][]bool{{}, {}}},
		"mask at 0":     {Tokens: [][]int{{1, 2}, {1, 2}}, Mask: [][]bool{{true, true}, {false, true}}},
		"no response":   {Tokens: [][]int{{1, 2}, {1, 2}}, Mask: [][]bool{{false, true}, {false, false}}},
		"wrong batch":   {Tokens: [][]int{{1, 2}}, Mask: [][]bool{{false, true}}},
		"mask too long": {Tokens: [][]int{{1, 2}, {1, 2}}, Mask: [][]bool{{false, true, true}, {false, true}}},
	} {
		if _, err := tr.Step(ad, b, []float64{-1, -1}); err == nil {
			t.Errorf("%s: accepted", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	if _, err := tr.Step(grRandomAdapter(rng, cfg, 3, 4, 0.3), ok, []float64{-1, -1}); err == nil {
		t.Error("adapter of another rank accepted")
	}
	if _, err := tr.Step(ad, ok, []float64{-1}); err == nil {
		t.Error("wrong number of reference log-probs accepted")
	}
	fwd, _ := NewTrainer(base, 2, 2, 6, Objective{Precision: Float64})
	if _, err := fwd.Step(ad, ok, []float64{-1, -1}); err != ErrNoLoss {
		t.Errorf("Step without a loss: %v", err)
	}
}

func TestPairBatch(t *testing.T) {
	b, err := PairBatch([][]int{{1, 2}, {3}}, [][]int{{4}, {5, 6}}, [][]int{{7, 8}, {9}})
	if err != nil {
		t.Fatal(err)
	}
	want := [][]int{{1, 2, 4}, {3, 5, 6}, {1, 2, 7, 8}, {3, 9}}
	wantM := [][]bool{{false, false, true}, {false, true, true}, {false, false, true, true}, {false, true}}
	for i := range want {
		if !slices.Equal(b.Tokens[i], want[i]) || !slices.Equal(b.Mask[i], wantM[i]) {
			t.Errorf("row %d: %v %v, want %v %v", i, b.Tokens[i], b.Mask[i], want[i], wantM[i])
		}
	}
}
