package model

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Gradient checks: every layer of the training graph, separately, and the whole model with LoRA
// under DPO, IPO and SLiC, against fourth-order central finite differences (h = 1e-3, float64;
// see grFdGrad).
//
// Bound: 1e-6 on the elementwise relative error (entries >= 1e-4 of the tensor's max) and on the
// normwise relative error. The stencil's truncation (about 1e-12) and round-off (about 1e-13*|f|)
// keep a correct gradient far below the bound, while a wrong term (a missing factor, a transposed
// index, a leaked masked position) lands at 1e-3..1.

const grGradTol = 1e-6

const (
	grGCB, grGCT, grGCD, grGCH, grGCV = 2, 6, 8, 2, 11
)

func grCheckBound(t *testing.T, layer string, e, n float64) {
	t.Helper()
	t.Logf("%s: max elementwise relative error %.3g, normwise %.3g", layer, e, n)
	if e > grGradTol || n > grGradTol || math.IsNaN(e) || math.IsNaN(n) {
		t.Errorf("%s: gradient check failed (elementwise %.3g, normwise %.3g, bound %g)", layer, e, n, grGradTol)
	}
}

func grRnd(rng *rand.Rand, std float64, shape ...int) *tensor.Dense {
	return grDenseOf(grRandTensor(rng, std, shape...))
}

func TestGradCheckEmbedding(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	tok := tensor.New(tensor.WithShape(grGCB*grGCT), tensor.Of(tensor.Float64))
	for i := range tok.Data().([]float64) {
		tok.Data().([]float64)[i] = float64(rng.IntN(grGCV))
	}
	tok.Data().([]float64)[3] = tok.Data().([]float64)[7] // a repeated token accumulates
	e, n := grLayerGradCheck(t, rng, []grGraphInput{
		{"wte", grRnd(rng, 0.5, grGCV, grGCD), true},
		{"wpe", grRnd(rng, 0.5, grGCT+2, grGCD), true},
		{"tokens", tok, false},
	}, func(g *G.ExprGraph, in G.Nodes) (*G.Node, error) {
		return grEmbedAtOp[float64](in[0], in[1], in[2], nil, grGCT)
	})
	grCheckBound(t, "embedding lookup", e, n)
}

func TestGradCheckLayerNorm(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 1))
	gain, bias := grRandTensor(rng, 0.5, grGCD), grRandTensor(rng, 0.5, grGCD)
	for i := range gain.Data {
		gain.Data[i] += 1
	}
	e, n := grLayerGradCheck(t, rng, []grGraphInput{{"x", grRnd(rng, 1, grGCB*grGCT, grGCD), true}},
		func(g *G.ExprGraph, in G.Nodes) (*G.Node, error) {
			return grLayerNormOp(in[0], gain.Data, bias.Data, 1e-5)
		})
	grCheckBound(t, "LayerNorm", e, n)
}

func TestGradCheckAttention(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 1))
	e, n := grLayerGradCheck(t, rng, []grGraphInput{{"qkv", grRnd(rng, 1, grGCB*grGCT, 3*grGCD), true}},
		func(g *G.ExprGraph, in G.Nodes) (*G.Node, error) {
			return grCausalAttentionOp[float64](in[0], nil, grGCB, grGCT, grGCD, grGCH)
		})
	grCheckBound(t, "causal attention", e, n)
}

func TestGradCheckGELU(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 1))
	e, n := grLayerGradCheck(t, rng, []grGraphInput{{"x", grRnd(rng, 2, grGCB*grGCT, 4*grGCD), true}},
		func(g *G.ExprGraph, in G.Nodes) (*G.Node, error) { return grGeluOp[float64](in[0]) })
	grCheckBound(t, "GELU (tanh)", e, n)
}

func grLoraCase(rng *rand.Rand, in, out, r int, scale *float64) *grLoraParams[float64] {
	return &grLoraParams[float64]{W: grRandTensor(rng, 0.5, in, out).Data, Bias: grRandTensor(rng, 0.5, out).Data, In: in, Out: out, Rank: r, Scale: scale}
}

func TestGradCheckLoRALinear(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 1))
	const r = 3
	scale := 16.0 / r
	p := grLoraCase(rng, grGCD, 3*grGCD, r, &scale)
	e, n := grLayerGradCheck(t, rng, []grGraphInput{
		{"x", grRnd(rng, 1, grGCB*grGCT, grGCD), true},
		{"A", grRnd(rng, 0.5, grGCD, r), true},
		{"B", grRnd(rng, 0.5, r, 3*grGCD), true},
	}, func(g *G.ExprGraph, in G.Nodes) (*G.Node, error) {
		return grLoraLinearOp[float64](in[0], in[1], in[2], p)
	})
	grCheckBound(t, "LoRA linear", e, n)
}

func TestGradCheckMLP(t *testing.T) {
	rng := rand.New(rand.NewPCG(6, 1))
	const r = 2
	scale := 2.0
	fc, proj := grLoraCase(rng, grGCD, 4*grGCD, r, &scale), grLoraCase(rng, 4*grGCD, grGCD, r, &scale)
	e, n := grLayerGradCheck(t, rng, []grGraphInput{
		{"x", grRnd(rng, 1, grGCB*grGCT, grGCD), true},
		{"fc.A", grRnd(rng, 0.5, grGCD, r), true},
		{"fc.B", grRnd(rng, 0.5, r, 4*grGCD), true},
		{"proj.A", grRnd(rng, 0.5, 4*grGCD, r), true},
		{"proj.B", grRnd(rng, 0.5, r, grGCD), true},
	}, func(g *G.ExprGraph, in G.Nodes) (*G.Node, error) {
		h, err := grLoraLinearOp[float64](in[0], in[1], in[2], fc)
		if err != nil {
			return nil, err
		}
		if h, err = grGeluOp[float64](h); err != nil {
			return nil, err
		}
		return grLoraLinearOp[float64](h, in[3], in[4], proj)
	})
	grCheckBound(t, "MLP (LoRA c_fc → GELU → LoRA c_proj)", e, n)
}

func TestGradCheckTiedLogits(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 1))
	e, n := grLayerGradCheck(t, rng, []grGraphInput{{"x", grRnd(rng, 1, grGCB*grGCT, grGCD), true}, {"wte", grRnd(rng, 1, grGCV, grGCD), false}},
		func(g *G.ExprGraph, in G.Nodes) (*G.Node, error) { return grTiedLogitsOp[float64](in[0], in[1]) })
	grCheckBound(t, "tied output projection", e, n)
}

func TestGradCheckLogSoftmaxGather(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 1))
	N := grGCB * grGCT
	tgt, w := grTargetsAndMask(rng, N)
	lg := grRnd(rng, 3, N, grGCV)
	lg.Data().([]float64)[5] += 40 // a dominant logit: the max-subtracted form must stay exact
	e, n := grLayerGradCheck(t, rng, []grGraphInput{{"logits", lg, true}, {"targets", tgt, false}, {"mask", w, false}},
		func(g *G.ExprGraph, in G.Nodes) (*G.Node, error) {
			return grSeqLogProbOp[float64](in[0], in[1], in[2], grGCB)
		})
	grCheckBound(t, "log-softmax + masked gather", e, n)
}

func TestGradCheckRange(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 1))
	e, n := grLayerGradCheck(t, rng, []grGraphInput{{"x", grRnd(rng, 1, 6), true}},
		func(g *G.ExprGraph, in G.Nodes) (*G.Node, error) { return grRangeOp(in[0], 2, 5) })
	grCheckBound(t, "vector range (chosen/rejected split)", e, n)
}

// TestGradCheckModel checks d loss / d adapter for the whole model (2 layers, LoRA on all four
// projections, nonzero B) under each loss, sums and length-normalised (IPO) log-probs.
func TestGradCheckModel(t *testing.T) {
	cfg := grTinyConfig()
	for _, tc := range []struct {
		kind    string
		lenNorm bool
	}{{"DPO", false}, {"IPO", false}, {"IPO", true}, {"SLiC", false}} {
		name := tc.kind
		if tc.lenNorm {
			name += "-mean"
		}
		t.Run(name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(10, 2))
			base := grRandomWeights(rng, cfg)
			const r = 2
			ad := grRandomAdapter(rng, cfg, r, 4, 0.3)
			batch := grRandomBatch(rng, cfg, grGCB, grGCT)
			tr, err := NewTrainer(base, r, grGCB, grGCT, Objective{Loss: grTestLoss(tc.kind, 0.1), LengthNormalize: tc.lenNorm, Precision: Float64})
			if err != nil {
				t.Fatal(err)
			}
			ref := []float64{-9.5, -11.25}
			out, err := tr.Step(ad, batch, ref)
			if err != nil {
				t.Fatal(err)
			}
			names := make([]string, 0, len(out.Grads))
			for k := range out.Grads {
				names = append(names, k)
			}
			sort.Strings(names)
			var worstE, worstN float64
			for _, k := range names {
				num := grFdGrad(t, ad.Tensors[k].Data, func() float64 {
					o, err := tr.Step(ad, batch, ref)
					if err != nil {
						t.Fatal(err)
					}
					return o.Loss
				})
				e, n := grRelErr(out.Grads[k].Data, num)
				if grMaxAbs(num) == 0 {
					t.Errorf("%s: zero numeric gradient (the check would be vacuous)", k)
				}
				worstE, worstN = math.Max(worstE, e), math.Max(worstN, n)
			}
			t.Logf("loss %.6f, %d adapter tensors", out.Loss, len(names))
			grCheckBound(t, "whole model + LoRA, "+name, worstE, worstN)
		})
	}
}
