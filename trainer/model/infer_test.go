package model

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/bpo-dev/bpo/trainer/sample"
)

// mtNaiveLogits is a direct, loop-by-loop GPT-2 forward pass written from the
// definitions (tanh GELU, explicit causal softmax), independent of infer.go.
func mtNaiveLogits(w *Weights, tokens []int) [][]float64 {
	c := w.Config
	d, H := c.NEmbd, c.NHead
	hd := d / H
	T := len(tokens)
	W := func(n string) []float64 { return w.Tensors[n].Data }
	ln := func(x []float64, g, b []float64) []float64 {
		var mu, v float64
		for _, a := range x {
			mu += a
		}
		mu /= float64(len(x))
		for _, a := range x {
			v += (a - mu) * (a - mu)
		}
		v /= float64(len(x))
		y := make([]float64, len(x))
		for i, a := range x {
			y[i] = (a-mu)/math.Sqrt(v+c.LayerNormEpsilon)*g[i] + b[i]
		}
		return y
	}
	lin := func(x, Wm, b []float64, out int) []float64 {
		y := append([]float64(nil), b...)
		for i, a := range x {
			for j := 0; j < out; j++ {
				y[j] += a * Wm[i*out+j]
			}
		}
		return y
	}
	x := make([][]float64, T)
	for t, tok := range tokens {
		x[t] = make([]float64, d)
		for j := range x[t] {
			x[t][j] = W("wte.weight")[tok*d+j] + W("wpe.weight")[t*d+j]
		}
	}
	for l := 0; l < c.NLayer; l++ {
		p := "h." + mtItoa(l) + "."
		qkv := make([][]float64, T)
		for t := range x {
			qkv[t] = lin(ln(x[t], W(p+"ln_1.weight"), W(p+"ln_1.bias")), W(p+"attn.c_attn.weight"), W(p+"attn.c_attn.bias"), 3*d)
		}
		for t := range x {
			a := make([]float64, d)
			for h := 0; h < H; h++ {
				sc := make([]float64, t+1)
				var z float64
				for s := 0; s <= t; s++ {
					var dot float64
					for i := 0; i < hd; i++ {
						dot += qkv[t][h*hd+i] * qkv[s][d+h*hd+i]
					}
					sc[s] = math.Exp(dot / math.Sqrt(float64(hd)))
					z += sc[s]
				}
				for s := 0; s <= t; s++ {
					for i := 0; i < hd; i++ {
						a[h*hd+i] += sc[s] / z * qkv[s][2*d+h*hd+i]
					}
				}
			}
			o := lin(a, W(p+"attn.c_proj.weight"), W(p+"attn.c_proj.bias"), d)
			qkv[t] = append(qkv[t], o...) // stash; residual applied after all positions
		}
		for t := range x {
			for j := 0; j < d; j++ {
				x[t][j] += qkv[t][3*d+j]
			}
			f := lin(ln(x[t], W(p+"ln_2.weight"), W(p+"ln_2.bias")), W(p+"mlp.c_fc.weight"), W(p+"mlp.c_fc.bias"), 4*d)
			for i, v := range f {
				f[i] = 0.5 * v * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(v+0.044715*math.Pow(v, 3))))
			}
			o := lin(f, W(p+"mlp.c_proj.weight"), W(p+"mlp.c_proj.bias"), d)
			for j := range o {
				x[t][j] += o[j]
			}
		}
	}
	out := make([][]float64, T)
	for t := range x {
		h := ln(x[t], W("ln_f.weight"), W("ln_f.bias"))
		out[t] = make([]float64, c.VocabSize)
		for v := range out[t] {
			for j := 0; j < d; j++ {
				out[t][v] += h[j] * W("wte.weight")[v*d+j]
			}
		}
	}
	return out
}

func mtItoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return mtItoa(i/10) + string(rune('0'+i%10))
}

func mtClose(t *testing.T, what string, got, want []float64, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: length %d, want %d", what, len(got), len(want))
	}
	for i := range want {
		if d := math.Abs(got[i] - want[i]); d > tol*math.Max(1, math.Abs(want[i])) || math.IsNaN(got[i]) {
			t.Fatalf("%s[%d] = %.17g, want %.17g (diff %g)", what, i, got[i], want[i], d)
		}
	}
}

func mtTokens(r *rand.Rand, n, vocab int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = r.IntN(vocab)
	}
	return out
}

func TestLogitsMatchNaiveForward(t *testing.T) {
	cfg := mtConfig(29, 24, 16, 3, 4)
	w := mtRandomWeights(cfg, 11, 0.3)
	m := NewInferenceAt(w, Float64)
	r := rand.New(rand.NewPCG(1, 1))
	for _, T := range []int{1, 2, 7, 24} {
		toks := mtTokens(r, T, cfg.VocabSize)
		got := m.Logits(toks)
		want := mtNaiveLogits(w, toks)
		spread := 0.0
		for t2 := range want {
			mtClose(t, "logits", got[t2], want[t2], 1e-11)
			_, s := mtStd(want[t2])
			spread = max(spread, s)
		}
		if spread < 0.1 {
			t.Fatalf("degenerate test weights: logit std %g", spread)
		}
	}
}

func TestCacheMatchesFullForward(t *testing.T) {
	cfg := mtConfig(29, 40, 16, 2, 2)
	w := mtRandomWeights(cfg, 12, 0.3)
	m := NewInferenceAt(w, Float64)
	var _ sample.Model = m
	if m.VocabSize() != 29 || m.ContextLen() != 40 {
		t.Fatal("VocabSize/ContextLen")
	}
	r := rand.New(rand.NewPCG(2, 2))
	toks := mtTokens(r, 40, cfg.VocabSize)
	full := m.Logits(toks)
	for _, prompt := range []int{1, 3, 17} {
		c := m.NewCache(1)
		mtClose(t, "prefill", c.Prefill(0, toks[:prompt]), full[prompt-1], 1e-10)
		for p := prompt; p < len(toks); p++ {
			got := c.Step([]int{0}, []int{toks[p]})
			mtClose(t, "step", got[0], full[p], 1e-10)
		}
	}
}

func TestCacheRowsAtDifferentPositions(t *testing.T) {
	cfg := mtConfig(29, 64, 16, 2, 4)
	w := mtRandomWeights(cfg, 13, 0.3)
	m := NewInferenceAt(w, Float64)
	r := rand.New(rand.NewPCG(3, 3))
	const rows = 5
	seqs := make([][]int, rows)
	pos := make([]int, rows) // tokens consumed so far
	c := m.NewKVCache(rows)
	fulls := make([][][]float64, rows)
	for i := range seqs {
		seqs[i] = mtTokens(r, 30+i, cfg.VocabSize)
		fulls[i] = m.Logits(seqs[i])
	}
	// Rows 0..3 prefilled with different prompt lengths; row 4 starts by Step from empty.
	for i := 0; i < 4; i++ {
		pos[i] = 1 + 4*i
		mtClose(t, "prefill", c.Prefill(i, seqs[i][:pos[i]]), fulls[i][pos[i]-1], 1e-10)
	}
	// Step varying subsets of rows, in varying order.
	for it := 0; it < 25; it++ {
		var rs, ts []int
		for _, i := range r.Perm(rows) {
			if r.IntN(3) == 0 || pos[i] >= len(seqs[i]) {
				continue
			}
			rs = append(rs, i)
			ts = append(ts, seqs[i][pos[i]])
		}
		got := c.Step(rs, ts)
		for k, i := range rs {
			mtClose(t, "row step", got[k], fulls[i][pos[i]], 1e-10)
			pos[i]++
			if c.Len(i) != pos[i] {
				t.Fatalf("row %d Len %d, want %d", i, c.Len(i), pos[i])
			}
		}
	}
	// Prefill resets a row.
	mtClose(t, "re-prefill", c.Prefill(2, seqs[3][:6]), fulls[3][5], 1e-10)
	mtClose(t, "after re-prefill", c.Step([]int{2}, []int{seqs[3][6]})[0], fulls[3][6], 1e-10)
}

func TestCachePanicsOnMisuse(t *testing.T) {
	cfg := mtConfig(29, 4, 8, 1, 2)
	m := NewInferenceAt(mtRandomWeights(cfg, 1, 0.3), Float64)
	c := m.NewKVCache(2)
	c.Prefill(0, []int{1, 2, 3, 4})
	for name, f := range map[string]func(){
		"past context": func() { c.Step([]int{0}, []int{1}) },
		"bad token":    func() { c.Step([]int{1}, []int{29}) },
		"dup row":      func() { c.Step([]int{1, 1}, []int{1, 2}) },
		"bad row":      func() { c.Prefill(2, []int{1}) },
		"empty":        func() { c.Prefill(1, nil) },
		"long prompt":  func() { c.Prefill(1, []int{1, 2, 3, 4, 5}) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}

func TestSequenceLogProbs(t *testing.T) {
	cfg := mtConfig(29, 32, 16, 2, 2)
	w := mtRandomWeights(cfg, 14, 0.3)
	m := NewInferenceAt(w, Float64)
	r := rand.New(rand.NewPCG(4, 4))
	var prompts, responses [][]int
	for i := 0; i < 23; i++ {
		prompts = append(prompts, mtTokens(r, 1+r.IntN(10), cfg.VocabSize))
		responses = append(responses, mtTokens(r, r.IntN(15), cfg.VocabSize))
	}
	prompts = append(prompts, mtTokens(r, 2, cfg.VocabSize), mtTokens(r, 31, cfg.VocabSize))
	responses = append(responses, mtTokens(r, 30, cfg.VocabSize), mtTokens(r, 1, cfg.VocabSize))
	wantSums := make([]float64, len(prompts))
	for i := range prompts {
		seq := append(append([]int(nil), prompts[i]...), responses[i]...)
		logits := m.Logits(seq)
		for j, tok := range responses[i] {
			row := logits[len(prompts[i])+j-1]
			var z float64
			for _, v := range row {
				z += math.Exp(v)
			}
			wantSums[i] += row[tok] - math.Log(z)
		}
	}
	check := func(label string) {
		sums, counts, err := m.SequenceLogProbs(prompts, responses)
		if err != nil {
			t.Fatal(err)
		}
		mtClose(t, label, sums, wantSums, 1e-10)
		for i := range counts {
			if counts[i] != len(responses[i]) {
				t.Fatalf("%s: count %d = %d", label, i, counts[i])
			}
		}
	}
	check("one chunk")
	saved := infChunkFloats
	infChunkFloats = 4 * cfg.NEmbd * 20 // ~20 tokens per chunk: many chunks
	check("many chunks")
	infChunkFloats = saved

	// Errors.
	_, _, err := m.SequenceLogProbs([][]int{{1, 2}, mtTokens(r, 20, 29)}, [][]int{{3}, mtTokens(r, 13, 29)})
	if err == nil || !strings.Contains(err.Error(), "sequence 1 has length 33") || !strings.Contains(err.Error(), "n_positions 32") {
		t.Fatalf("too long: %v", err)
	}
	if _, _, err := m.SequenceLogProbs([][]int{{}}, [][]int{{1}}); err == nil || !strings.Contains(err.Error(), "prompt 0 is empty") {
		t.Fatalf("empty prompt: %v", err)
	}
	if _, _, err := m.SequenceLogProbs([][]int{{1}}, [][]int{{1, 40}}); err == nil || !strings.Contains(err.Error(), "response 0") {
		t.Fatalf("bad token: %v", err)
	}
	if _, _, err := m.SequenceLogProbs([][]int{{1}}, nil); err == nil {
		t.Fatal("mismatched lengths accepted")
	}
}
