package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/bpo-dev/bpo/trainer/model/kernels"
)

// Gradient checks of the language-model graph (graph_lm.go): its new layers separately, then
// the whole model in full-parameter mode (every base tensor) and in LoRA mode, against the
// fourth-order central differences and the 1e-6 bound of gradcheck_test.go.

func TestGradCheckLayerNormFull(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 1))
	gain := grRnd(rng, 0.5, grGCD)
	for i := range gain.Data().([]float64) {
		gain.Data().([]float64)[i] += 1
	}
	e, n := grLayerGradCheck(t, rng, []grGraphInput{
		{"x", grRnd(rng, 1, grGCB*grGCT, grGCD), true},
		{"gain", gain, true},
		{"bias", grRnd(rng, 0.5, grGCD), true},
	}, func(g *G.ExprGraph, in G.Nodes) (*G.Node, error) {
		return grLayerNormFullOp[float64](in[0], in[1], in[2], 1e-5)
	})
	grCheckBound(t, "LayerNorm (trainable gain, bias)", e, n)
}

func TestGradCheckLinearFull(t *testing.T) {
	rng := rand.New(rand.NewPCG(22, 1))
	e, n := grLayerGradCheck(t, rng, []grGraphInput{
		{"x", grRnd(rng, 1, grGCB*grGCT, grGCD), true},
		{"W", grRnd(rng, 0.5, grGCD, 3*grGCD), true},
		{"b", grRnd(rng, 0.5, 3*grGCD), true},
	}, func(g *G.ExprGraph, in G.Nodes) (*G.Node, error) { return grLinearFullOp[float64](in[0], in[1], in[2]) })
	grCheckBound(t, "Conv1D (trainable W, b)", e, n)
}

func TestGradCheckTiedLogitsFull(t *testing.T) {
	rng := rand.New(rand.NewPCG(23, 1))
	e, n := grLayerGradCheck(t, rng, []grGraphInput{
		{"x", grRnd(rng, 1, grGCB*grGCT, grGCD), true},
		{"wte", grRnd(rng, 1, grGCV, grGCD), true},
	}, func(g *G.ExprGraph, in G.Nodes) (*G.Node, error) { return grTiedLogitsFullOp[float64](in[0], in[1]) })
	grCheckBound(t, "tied output projection (trainable wte)", e, n)
}

// grLMLossLayerCheck checks the scalar LM loss directly (it is a cost, not an R-weighted output).
func TestGradCheckLMLoss(t *testing.T) {
	rng := rand.New(rand.NewPCG(24, 1))
	N := grGCB * grGCT
	tgt, w := grTargetsAndMask(rng, N)
	lg := grRnd(rng, 3, N, grGCV)
	lg.Data().([]float64)[5] += 40
	g := G.NewGraph()
	ln := G.NewMatrix(g, tensor.Float64, G.WithShape(N, grGCV), G.WithName("logits"), G.WithValue(lg))
	tn := G.NewVector(g, tensor.Float64, G.WithShape(N), G.WithName("t"), G.WithValue(tgt))
	wn := G.NewVector(g, tensor.Float64, G.WithShape(N), G.WithName("w"), G.WithValue(w))
	loss, err := grLMLossOp[float64](ln, tn, wn)
	if err != nil {
		t.Fatal(err)
	}
	// a cost composed with a scalar op, so that the incoming gradient is not 1
	cost, err := G.Mul(loss, G.NewConstant(2.5))
	if err != nil {
		t.Fatal(err)
	}
	grads, err := G.Grad(cost, ln)
	if err != nil {
		t.Fatal(err)
	}
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	run := func() float64 {
		if err := vm.RunAll(); err != nil {
			t.Fatal(err)
		}
		vm.Reset()
		return grScalarValue(cost.Value())
	}
	v := run()
	analytic := append([]float64(nil), grads[0].Value().Data().([]float64)...)
	// the value against a plain computation
	var s, c float64
	for n := range N {
		if w.Data().([]float64)[n] == 0 {
			continue
		}
		row := lg.Data().([]float64)[n*grGCV : (n+1)*grGCV]
		s -= kernels.LogSoftmaxAt(row, int(tgt.Data().([]float64)[n]))
		c++
	}
	if want := 2.5 * s / c; math.Abs(v-want) > 1e-12*math.Abs(want) {
		t.Errorf("LM loss %.15g, want %.15g", v, want)
	}
	num := grFdGrad(t, lg.Data().([]float64), run)
	e, nrm := grRelErr(analytic, num)
	grCheckBound(t, "mean next-token NLL", e, nrm)
}

// grLMBatch draws a batch whose masks cover every position after the first (pretraining), with
// one row shorter (padding) and one row with a gap in its mask (SFT-like prompt).
func grLMBatch(rng *rand.Rand, cfg Config, B, T int) Batch {
	b := grRandomBatch(rng, cfg, B, T)
	for i := range b.Mask {
		for j := range b.Mask[i] {
			b.Mask[i][j] = j > 0
		}
	}
	if B > 1 {
		b.Mask[1][2] = false
	}
	return b
}

// grPackedBatch packs documents (tokens below the EOT id, each ending with EOT) into B rows of at
// most T tokens, the last row part-filled; every token but a document's first is masked. It
// also returns the documents.
func grPackedBatch(rng *rand.Rand, cfg Config, B, T int) (Batch, [][]int) {
	eot := cfg.EOSTokenID
	b := Batch{Tokens: make([][]int, B), Mask: make([][]bool, B)}
	var docs [][]int
	for i := range B {
		room := T
		if i == B-1 {
			room = T - 3
		}
		for room >= 2 {
			n := 2 + rng.IntN(min(room, 5)-1) // 2..min(room,5) tokens, EOT included
			doc := make([]int, n)
			for j := range n - 1 {
				doc[j] = rng.IntN(eot)
			}
			doc[n-1] = eot
			for j := range doc {
				b.Tokens[i] = append(b.Tokens[i], doc[j])
				b.Mask[i] = append(b.Mask[i], j > 0)
			}
			docs = append(docs, doc)
			room -= n
		}
	}
	return b, docs
}

func TestGradCheckEmbedPositions(t *testing.T) {
	rng := rand.New(rand.NewPCG(29, 1))
	N := grGCB * grGCT
	tok := tensor.New(tensor.WithShape(N), tensor.Of(tensor.Float64))
	pos := tensor.New(tensor.WithShape(N), tensor.Of(tensor.Float64))
	for i := range N {
		tok.Data().([]float64)[i] = float64(rng.IntN(grGCV))
		pos.Data().([]float64)[i] = float64(rng.IntN(4)) // repeated positions accumulate
	}
	e, n := grLayerGradCheck(t, rng, []grGraphInput{
		{"wte", grRnd(rng, 0.5, grGCV, grGCD), true},
		{"wpe", grRnd(rng, 0.5, grGCT+2, grGCD), true},
		{"tokens", tok, false},
		{"positions", pos, false},
	}, func(g *G.ExprGraph, in G.Nodes) (*G.Node, error) {
		return grEmbedAtOp[float64](in[0], in[1], in[2], in[3], 0)
	})
	grCheckBound(t, "embedding lookup, explicit positions", e, n)
}

func TestGradCheckSegmentedAttention(t *testing.T) {
	rng := rand.New(rand.NewPCG(30, 1))
	N := grGCB * grGCT
	st := tensor.New(tensor.WithShape(N), tensor.Of(tensor.Float64))
	for b := range grGCB { // documents [0,2) [2,5) [5,T) in row 0; one document in row 1
		for i := range grGCT {
			s := 0
			if b == 0 && i >= 5 {
				s = 5
			} else if b == 0 && i >= 2 {
				s = 2
			}
			st.Data().([]float64)[b*grGCT+i] = float64(s)
		}
	}
	e, n := grLayerGradCheck(t, rng, []grGraphInput{{"qkv", grRnd(rng, 1, N, 3*grGCD), true}, {"starts", st, false}},
		func(g *G.ExprGraph, in G.Nodes) (*G.Node, error) {
			return grCausalAttentionOp[float64](in[0], in[1], grGCB, grGCT, grGCD, grGCH)
		})
	grCheckBound(t, "segmented causal attention", e, n)
}

// TestGradCheckLMFull checks d loss / d tensor for every base tensor of a 2-layer model in the
// full-parameter mode, one tensor kind at a time (the relative error of each is logged), with
// one document per row and with packed rows.
func TestGradCheckLMFull(t *testing.T) {
	cfg := grTinyConfig()
	for _, packed := range []bool{false, true} {
		name := "rows"
		if packed {
			name = "packed"
		}
		t.Run(name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(25, 1))
			w := grRandomWeights(rng, cfg)
			batch := grLMBatch(rng, cfg, grGCB, grGCT)
			if packed {
				batch, _ = grPackedBatch(rng, cfg, grGCB, grGCT)
			}
			tr, err := NewLMTrainer(w, grGCB, grGCT, LMOptions{Packed: packed, Precision: Float64})
			if err != nil {
				t.Fatal(err)
			}
			if got, want := len(tr.ParamNames()), len(cfg.ParamNames()); got != want {
				t.Fatalf("%d trained tensors, want every base tensor (%d)", got, want)
			}
			out, err := tr.Step(nil, batch)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("loss %.6f over %d tokens", out.Loss, out.Tokens)
			kinds := map[string][2]float64{}
			errs := grCheckNamedGrads(t, tr.ParamNames(), w.Tensors, out.Grads, func() (float64, error) {
				l, _, err := tr.Loss(nil, batch)
				return l, err
			})
			for name, en := range errs {
				e, n := en[0], en[1]
				kind := name
				if strings.HasPrefix(name, "h.") {
					kind = "h.*" + name[strings.Index(name[2:], ".")+2:]
				}
				k := kinds[kind]
				kinds[kind] = [2]float64{math.Max(k[0], e), math.Max(k[1], n)}
			}
			for _, kind := range wioSortedKeys(kinds) {
				grCheckBound(t, "full-parameter LM d/d "+kind, kinds[kind][0], kinds[kind][1])
			}
			if len(kinds) != 16 {
				t.Errorf("%d tensor kinds checked, want 16", len(kinds))
			}
		})
	}
}

// TestGradCheckLMLoRA checks the adapter gradients of the LoRA-mode LM loss.
func TestGradCheckLMLoRA(t *testing.T) {
	cfg := grTinyConfig()
	rng := rand.New(rand.NewPCG(26, 1))
	base := grRandomWeights(rng, cfg)
	const r = 2
	ad := grRandomAdapter(rng, cfg, r, 4, 0.3)
	batch := grLMBatch(rng, cfg, grGCB, grGCT)
	tr, err := NewLoRALMTrainer(base, r, grGCB, grGCT, LMOptions{Precision: Float64})
	if err != nil {
		t.Fatal(err)
	}
	out, err := tr.Step(ad, batch)
	if err != nil {
		t.Fatal(err)
	}
	var worstE, worstN float64
	errs := grCheckNamedGrads(t, tr.ParamNames(), ad.Tensors, out.Grads, func() (float64, error) {
		l, _, err := tr.Loss(ad, batch)
		return l, err
	})
	for _, en := range errs {
		worstE, worstN = math.Max(worstE, en[0]), math.Max(worstN, en[1])
	}
	grCheckBound(t, "LoRA LM (all adapter tensors)", worstE, worstN)
}

// TestLMLossMatchesInference: the LM loss of a batch is −mean of the per-token log-probs the
// pure-Go inference path computes, for the full-parameter graph (base model) and the LoRA graph
// (against the merged dense model).
func TestLMLossMatchesInference(t *testing.T) {
	cfg := grTinyConfig()
	rng := rand.New(rand.NewPCG(27, 1))
	w := grRandomWeights(rng, cfg)
	const B, T = 3, 9
	batch := grRandomBatch(rng, cfg, B, T) // prompt of 1-3 tokens, then the masked response
	ref := func(m *Weights) float64 {
		var prompts, resps [][]int
		for i, row := range batch.Tokens {
			p := 0
			for p < len(row) && !batch.Mask[i][p] {
				p++
			}
			prompts, resps = append(prompts, row[:p]), append(resps, row[p:])
		}
		lps, err := NewInferenceAt(m, Float64).TokenLogProbs(prompts, resps)
		if err != nil {
			t.Fatal(err)
		}
		var s float64
		var n int
		for _, l := range lps {
			for _, v := range l {
				s += v
				n++
			}
		}
		return -s / float64(n)
	}
	full, err := NewLMTrainer(w, B, T, LMOptions{Precision: Float64})
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := full.Loss(nil, batch)
	if err != nil {
		t.Fatal(err)
	}
	step, err := full.Step(nil, batch)
	if err != nil {
		t.Fatal(err)
	}
	want := ref(w)
	t.Logf("full: graph %.15f, inference %.15f", got, want)
	if math.Abs(got-want) > 1e-10*math.Abs(want) || step.Loss != got {
		t.Errorf("full-parameter LM loss %.15g (step %.15g), inference −mean log-prob %.15g", got, step.Loss, want)
	}

	ad := grRandomAdapter(rng, cfg, 2, 4, 0.3)
	lora, err := NewLoRALMTrainer(w, 2, B, T, LMOptions{Precision: Float64})
	if err != nil {
		t.Fatal(err)
	}
	got, _, err = lora.Loss(ad, batch)
	if err != nil {
		t.Fatal(err)
	}
	want = ref(MergeMean(w, []*Adapter{ad}))
	t.Logf("LoRA: graph %.15f, inference (merged) %.15f", got, want)
	if math.Abs(got-want) > 1e-10*math.Abs(want) {
		t.Errorf("LoRA LM loss %.15g, inference −mean log-prob of the merged model %.15g", got, want)
	}
	if base, _, _ := lora.Loss(nil, batch); math.Abs(base-ref(w)) > 1e-10*math.Abs(base) {
		t.Errorf("LoRA trainer with no adapter: %.15g, base %.15g", base, ref(w))
	}
}

func TestLMTrainerErrors(t *testing.T) {
	cfg := grTinyConfig()
	rng := rand.New(rand.NewPCG(28, 1))
	w := grRandomWeights(rng, cfg)
	tr, err := NewLMTrainer(w, 2, 4, LMOptions{Precision: Float64})
	if err != nil {
		t.Fatal(err)
	}
	b := Batch{Tokens: [][]int{{1, 2}, {3}}, Mask: [][]bool{{false, true}, {false}}}
	if _, err := tr.Step(grRandomAdapter(rng, cfg, 2, 4, 0.1), b); err == nil {
		t.Error("full-parameter Step accepted an adapter")
	}
	w.Tensors["wpe.weight"] = w.Tensors["wpe.weight"].Clone()
	if _, err := tr.Step(nil, b); err == nil || !strings.Contains(err.Error(), "replaced") {
		t.Errorf("replaced tensor: err = %v", err)
	}
	lora, err := NewLoRALMTrainer(w, 2, 2, 4, LMOptions{Precision: Float64})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lora.Step(nil, b); err == nil {
		t.Error("LoRA Step without an adapter")
	}
	if _, err := NewLMTrainer(w, 2, 17, LMOptions{Precision: Float64}); err == nil {
		t.Error("seqLen beyond n_positions accepted")
	}
	// no masked token: loss 0, zero gradients
	empty := Batch{Tokens: [][]int{{1}, {}}, Mask: [][]bool{{false}, nil}}
	out, err := lora.Step(grRandomAdapter(rng, cfg, 2, 4, 0.1), empty)
	if err != nil {
		t.Fatal(err)
	}
	if out.Loss != 0 || out.Tokens != 0 || grMaxAbs(out.Grads["h.0.mlp.c_fc.lora_A"].Data) != 0 {
		t.Errorf("empty batch: loss %g tokens %d", out.Loss, out.Tokens)
	}
}

// BenchmarkLMStep times one full-parameter LM forward+backward (batch 16, every position
// predicted) and reports tok/s and tok/cpu-s (process CPU time, meaningful on a shared machine).
func BenchmarkLMStep(b *testing.B) {
	for _, sz := range []struct{ d, L, T int }{{64, 2, 64}, {96, 2, 64}, {96, 2, 128}, {128, 2, 64}, {128, 2, 128}, {128, 3, 64}} {
		for _, full := range []bool{true, false} {
			mode := "full"
			if !full {
				mode = "lora8"
			}
			b.Run(fmt.Sprintf("%s_d%d_L%d_T%d_B16", mode, sz.d, sz.L, sz.T), func(b *testing.B) {
				const B, V = 16, 257
				cfg := Config{ModelType: "gpt2", VocabSize: V, NPositions: sz.T, NEmbd: sz.d, NLayer: sz.L, NHead: sz.d / 32,
					LayerNormEpsilon: 1e-5, ActivationFunction: "gelu_new", BOSTokenID: 256, EOSTokenID: 256}
				rng := rand.New(rand.NewPCG(97, 1))
				w := grRandomWeights(rng, cfg)
				batch := Batch{Tokens: make([][]int, B), Mask: make([][]bool, B)}
				for i := range B {
					batch.Tokens[i] = make([]int, sz.T)
					batch.Mask[i] = make([]bool, sz.T)
					for t := range sz.T {
						batch.Tokens[i][t] = rng.IntN(V - 1) // one document per row
						batch.Mask[i][t] = t > 0
					}
				}
				var tr *LMTrainer
				var ad *Adapter
				var err error
				if full {
					tr, err = NewLMTrainer(w, B, sz.T, LMOptions{Packed: true, Precision: Float64})
				} else {
					tr, err = NewLoRALMTrainer(w, 8, B, sz.T, LMOptions{Packed: true, Precision: Float64})
					ad = grRandomAdapter(rng, cfg, 8, 16, 0.05)
				}
				if err != nil {
					b.Fatal(err)
				}
				if _, err := tr.Step(ad, batch); err != nil {
					b.Fatal(err)
				}
				b.ResetTimer()
				cpu0 := grCPUTime()
				for b.Loop() {
					if _, err := tr.Step(ad, batch); err != nil {
						b.Fatal(err)
					}
				}
				cpu := (grCPUTime() - cpu0).Seconds() / float64(b.N)
				sec := b.Elapsed().Seconds() / float64(b.N)
				b.ReportMetric(float64(B*sz.T)/sec, "tok/s")
				b.ReportMetric(cpu*1e3, "cpu-ms/op")
				b.ReportMetric(float64(B*sz.T)/cpu, "tok/cpu-s")
			})
		}
	}
}

// TestLMPackedMatchesInference: a packed batch scores every document exactly as the inference
// path scores it alone (its first token as the prompt, the rest and EOT as the response).
func TestLMPackedMatchesInference(t *testing.T) {
	cfg := grTinyConfig()
	rng := rand.New(rand.NewPCG(31, 1))
	w := grRandomWeights(rng, cfg)
	const B, T = 3, 12
	batch, docs := grPackedBatch(rng, cfg, B, T)
	var prompts, resps [][]int
	for _, d := range docs {
		prompts, resps = append(prompts, d[:1]), append(resps, d[1:])
	}
	ad := grRandomAdapter(rng, cfg, 2, 4, 0.3)
	for _, lora := range []bool{false, true} {
		m := w
		var tr *LMTrainer
		var err error
		var a *Adapter
		if lora {
			m, a = MergeMean(w, []*Adapter{ad}), ad
			tr, err = NewLoRALMTrainer(w, 2, B, T, LMOptions{Packed: true, Precision: Float64})
		} else {
			tr, err = NewLMTrainer(w, B, T, LMOptions{Packed: true, Precision: Float64})
		}
		if err != nil {
			t.Fatal(err)
		}
		lps, err := NewInferenceAt(m, Float64).TokenLogProbs(prompts, resps)
		if err != nil {
			t.Fatal(err)
		}
		var s float64
		var n int
		for _, l := range lps {
			for _, v := range l {
				s += v
				n++
			}
		}
		got, cnt, err := tr.Loss(a, batch)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("lora=%v: %d documents in %d rows, graph %.15f, inference %.15f", lora, len(docs), B, got, -s/float64(n))
		if cnt != n || math.Abs(got+s/float64(n)) > 1e-10*math.Abs(got) {
			t.Errorf("lora=%v: packed LM loss %.15g over %d tokens, inference %.15g over %d", lora, got, cnt, -s/float64(n), n)
		}
	}
	// a masked document start is refused
	bad := Batch{Tokens: [][]int{{1, cfg.EOSTokenID, 2, 3}}, Mask: [][]bool{{false, true, true, true}}}
	tr, err := NewLMTrainer(w, 1, 4, LMOptions{Packed: true, Precision: Float64})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := tr.Loss(nil, bad); err == nil || !strings.Contains(err.Error(), "starts a packed document") {
		t.Errorf("masked document start: err = %v", err)
	}
}

// grCheckNamedGrads compares, for each named tensor, the analytic gradient with central
// finite differences of loss over that tensor's data, and returns the relative errors
// (max element-wise, and normwise) by name. A zero numeric gradient is an error: the
// comparison would be vacuous.
func grCheckNamedGrads(t *testing.T, names []string, tensors, grads map[string]*Tensor, loss func() (float64, error)) map[string][2]float64 {
	t.Helper()
	out := make(map[string][2]float64, len(names))
	for _, name := range names {
		num := grFdGrad(t, tensors[name].Data, func() float64 {
			l, err := loss()
			if err != nil {
				t.Fatal(err)
			}
			return l
		})
		if grMaxAbs(num) == 0 {
			t.Errorf("%s: zero numeric gradient (the check would be vacuous)", name)
		}
		e, n := grRelErr(grads[name].Data, num)
		out[name] = [2]float64{e, n}
	}
	return out
}
