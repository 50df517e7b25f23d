package model

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/bpo-dev/bpo/trainer/blas"
)

// The float32 engine against the float64 one on the same model and batch: every output must agree
// to float32 precision (relative 1e-4 on sums of ~100 terms, 1e-3 on gradients, which pass through
// a dozen float32 GEMMs), and must not be bit-identical (the test would then not be testing the
// float32 path at all).

// f32Config is big enough that float32 rounding is visible: d 32, 4 heads, 2 layers, vocab 97.
func f32Config() Config {
	return Config{ModelType: "gpt2", VocabSize: 97, NPositions: 24, NEmbd: 32, NLayer: 2, NHead: 4,
		LayerNormEpsilon: 1e-5, ActivationFunction: "gelu_new", BOSTokenID: 96, EOSTokenID: 96}
}

// relDiff is max_i |a_i − b_i| / max(max_i |b_i|, tiny): a normwise-max relative error.
func relDiff(a, b []float64) float64 {
	var num, den float64
	for i := range a {
		num = math.Max(num, math.Abs(a[i]-b[i]))
		den = math.Max(den, math.Abs(b[i]))
	}
	return num / math.Max(den, 1e-30)
}

func TestFloat32TrainerMatchesFloat64(t *testing.T) {
	rng := rand.New(rand.NewPCG(32, 64))
	cfg := f32Config()
	base := grRandomWeights(rng, cfg)
	a := grRandomAdapter(rng, cfg, 4, 8, 0.2)
	const P, T = 3, 20
	b := grRandomBatch(rng, cfg, 2*P, T)
	ref := make([]float64, 2*P)
	for i := range ref {
		ref[i] = -30 + rng.NormFloat64()
	}
	var outs [2]StepOutput
	for i, p := range []Precision{Float32, Float64} {
		tr, err := NewTrainer(base, 4, 2*P, T, Objective{Loss: grTestLoss("DPO", 0.1), Precision: p})
		if err != nil {
			t.Fatal(err)
		}
		if outs[i], err = tr.Step(a, b, ref); err != nil {
			t.Fatal(err)
		}
	}
	f32, f64 := outs[0], outs[1]
	if d := relDiff(f32.LogProbs, f64.LogProbs); d > 1e-5 || d == 0 {
		t.Errorf("log-prob sums: float32 vs float64 relative difference %.3g, want (0, 1e-5]", d)
	}
	if d := math.Abs(f32.Loss-f64.Loss) / math.Abs(f64.Loss); d > 1e-4 {
		t.Errorf("loss: float32 %.9g vs float64 %.9g", f32.Loss, f64.Loss)
	}
	for name, g := range f64.Grads {
		if d := relDiff(f32.Grads[name].Data, g.Data); d > 1e-3 {
			t.Errorf("gradient %s: float32 vs float64 relative difference %.3g", name, d)
		}
	}
}

func TestFloat32LMTrainerMatchesFloat64(t *testing.T) {
	for _, full := range []bool{true, false} {
		rng := rand.New(rand.NewPCG(5, 6))
		cfg := f32Config()
		w := grRandomWeights(rng, cfg)
		a := grRandomAdapter(rng, cfg, 2, 4, 0.2)
		const B, T = 3, 16
		b := grRandomBatch(rng, cfg, B, T)
		var outs [2]LMStepOutput
		for i, p := range []Precision{Float32, Float64} {
			var tr *LMTrainer
			var err error
			if full {
				tr, err = NewLMTrainer(w, B, T, LMOptions{Precision: p})
			} else {
				tr, err = NewLoRALMTrainer(w, 2, B, T, LMOptions{Precision: p})
			}
			if err != nil {
				t.Fatal(err)
			}
			ad := a
			if full {
				ad = nil
			}
			if outs[i], err = tr.Step(ad, b); err != nil {
				t.Fatal(err)
			}
		}
		if d := math.Abs(outs[0].Loss-outs[1].Loss) / outs[1].Loss; d > 1e-5 || d == 0 {
			t.Errorf("full=%v: LM loss float32 %.9g vs float64 %.9g (relative %.3g)", full, outs[0].Loss, outs[1].Loss, d)
		}
		for name, g := range outs[1].Grads {
			if d := relDiff(outs[0].Grads[name].Data, g.Data); d > 1e-3 {
				t.Errorf("full=%v: gradient %s: float32 vs float64 relative difference %.3g", full, name, d)
			}
		}
	}
}

// TestFloat32FullLMReadsUpdatedWeights: in float32 the full-parameter graph holds converted
// copies; an in-place update of the weights (what the optimizer does) must reach the next step.
func TestFloat32FullLMReadsUpdatedWeights(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 9))
	cfg := f32Config()
	w := grRandomWeights(rng, cfg)
	b := grRandomBatch(rng, cfg, 2, 12)
	tr, err := NewLMTrainer(w, 2, 12, LMOptions{})
	if err != nil {
		t.Fatal(err)
	}
	l0, _, err := tr.Loss(nil, b)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range tr.Params() {
		for i := range v {
			v[i] *= 0.5
		}
	}
	l1, _, err := tr.Loss(nil, b)
	if err != nil {
		t.Fatal(err)
	}
	want, err := NewLMTrainer(w, 2, 12, LMOptions{})
	if err != nil {
		t.Fatal(err)
	}
	l2, _, _ := want.Loss(nil, b)
	if l1 == l0 || l1 != l2 {
		t.Errorf("loss before %.9g, after the in-place update %.9g, fresh trainer on the updated weights %.9g", l0, l1, l2)
	}
}

func TestFloat32InferenceMatchesFloat64(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	cfg := f32Config()
	w := grRandomWeights(rng, cfg)
	m32, m64 := NewInference(w), NewInferenceAt(w, Float64)
	if m32.Precision() != Float32 {
		t.Fatalf("NewInference precision %q, want float32", m32.Precision())
	}
	toks := mtTokens(rng, 20, cfg.VocabSize)
	l32, l64 := m32.Logits(toks), m64.Logits(toks)
	for i := range l64 {
		if d := relDiff(l32[i], l64[i]); d > 1e-5 {
			t.Errorf("position %d: logits relative difference %.3g", i, d)
		}
	}
	prompts := [][]int{toks[:5], toks[3:6], toks[:1]}
	resps := [][]int{toks[5:17], toks[6:20], toks[1:9]}
	s32, _, err := m32.SequenceLogProbs(prompts, resps)
	if err != nil {
		t.Fatal(err)
	}
	s64, _, _ := m64.SequenceLogProbs(prompts, resps)
	if d := relDiff(s32, s64); d > 1e-5 || d == 0 {
		t.Errorf("sequence log-probs: relative difference %.3g, want (0, 1e-5]", d)
	}
	// The KV cache in float32 against the float32 full forward.
	c := m32.NewKVCache(1)
	got := c.Prefill(0, toks[:4])
	if d := relDiff(got, l32[3]); d > 1e-5 {
		t.Errorf("prefill logits vs full forward: %.3g", d)
	}
	for p := 4; p < 10; p++ {
		got = c.Step([]int{0}, []int{toks[p]})[0]
		if d := relDiff(got, l32[p]); d > 1e-5 {
			t.Errorf("step %d logits vs full forward: %.3g", p, d)
		}
	}
}

func TestParsePrecision(t *testing.T) {
	for in, want := range map[string]Precision{"": Float32, "fp32": Float32, "float64": Float64, "f64": Float64} {
		if got, err := ParsePrecision(in); err != nil || got != want {
			t.Errorf("ParsePrecision(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParsePrecision("bf16"); err == nil {
		t.Error("ParsePrecision(bf16): no error")
	}
	if _, err := NewTrainer(Init(f32Config(), 1), 2, 2, 4, Objective{Precision: "half"}); err == nil {
		t.Error("NewTrainer with precision half: no error")
	}
}

// TestStepBitIdenticalAcrossThreads: kernels split rows, heads and elements but never a
// reduction, and blas.Gemm splits the rows of C, so a float32 step is bit-identical whatever the
// thread count.
func TestStepBitIdenticalAcrossThreads(t *testing.T) {
	defer blas.SetThreads(0)
	rng := rand.New(rand.NewPCG(12, 13))
	cfg := f32Config()
	cfg.NPositions = 128
	base := grRandomWeights(rng, cfg)
	a := grRandomAdapter(rng, cfg, 4, 8, 0.2)
	const P, T = 8, 60
	b := grRandomBatch(rng, cfg, 2*P, T)
	ref := make([]float64, 2*P)
	var want StepOutput
	for i, threads := range []int{1, 2, 3} {
		blas.SetThreads(threads)
		tr, err := NewTrainer(base, 4, 2*P, T, Objective{Loss: grTestLoss("DPO", 0.1)})
		if err != nil {
			t.Fatal(err)
		}
		out, err := tr.Step(a, b, ref)
		if err != nil {
			t.Fatal(err)
		}
		lp, _, err := NewInference(base).SequenceLogProbs(b.Tokens[:2], b.Tokens[2:4])
		if err != nil {
			t.Fatal(err)
		}
		out.LogProbs = append(out.LogProbs, lp...)
		if i == 0 {
			want = out
			continue
		}
		if out.Loss != want.Loss || !slices.Equal(out.LogProbs, want.LogProbs) {
			t.Errorf("threads %d: loss %v log-probs %v, threads 1: %v %v", threads, out.Loss, out.LogProbs, want.Loss, want.LogProbs)
		}
		for name, g := range want.Grads {
			if !slices.Equal(out.Grads[name].Data, g.Data) {
				t.Errorf("threads %d: gradient %s differs from threads 1", threads, name)
			}
		}
	}
}
