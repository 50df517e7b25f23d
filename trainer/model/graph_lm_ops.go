package model

// Fused ops of the language-model graph (graph_lm.go) that the preference graph does not need:
// LayerNorm with trainable gain and bias, Conv1D and the tied output projection with trainable
// weights (grDenseOp), and the mean next-token negative log-likelihood. Packed rows use
// grEmbedAtOp and grCausalAttentionOp (graph_ops.go) with position ids and document starts. The
// ops follow the rules of graph_ops.go (every output fully written on every call; private caches
// are never outputs). Every reduction over rows runs in a fixed order, so results do not depend
// on GOMAXPROCS. Gradients are checked against finite differences in graph_lm_test.go.

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// ---------- LayerNorm with trainable gain and bias ----------

// grLayerNormFullOp is LayerNorm over the last axis of x [N,d] with gain [d] and bias [d] as
// graph inputs; differentiable in all three. Row means and inverse deviations are cached
// privately for the backward.
func grLayerNormFullOp(x, gain, bias *G.Node, eps float64) (*G.Node, error) {
	o := grNewKop("LayerNormFull", []int{2, 1, 1}, 2)
	var mean, rstd []float64 // private caches, one per row
	o.shape = func(s []tensor.Shape) (tensor.Shape, error) {
		if len(s[0]) != 2 || len(s[1]) != 1 || !s[1].Eq(s[2]) || s[0][1] != s[1][0] {
			return nil, fmt.Errorf("LayerNormFull: bad shapes x %v gain %v bias %v", s[0], s[1], s[2])
		}
		return s[0].Clone(), nil
	}
	o.fwd = func(out []float64, in []*tensor.Dense) error {
		x, g := grF64s(in[0]), grF64s(in[1])
		rows := len(x) / len(g)
		if cap(mean) < rows {
			mean, rstd = make([]float64, rows), make([]float64, rows)
		}
		mean, rstd = mean[:rows], rstd[:rows]
		grLayerNormRows(out, x, g, grF64s(in[2]), eps, mean, rstd)
		return nil
	}
	ready := func(rows int) error {
		if len(mean) != rows {
			return fmt.Errorf("LayerNormFull gradient before its forward")
		}
		return nil
	}
	o.diff = []bool{true, true, true}
	o.sym = func(in G.Nodes, _, dy *G.Node) (G.Nodes, error) {
		xo := grNewKop("LayerNormFullGradX", []int{2, 1, 2}, 2)
		xo.shape = func(s []tensor.Shape) (tensor.Shape, error) { return s[0].Clone(), nil }
		xo.fwd = func(dx []float64, v []*tensor.Dense) error {
			x, g := grF64s(v[0]), grF64s(v[1])
			if err := ready(len(x) / len(g)); err != nil {
				return err
			}
			grLayerNormGradRows(dx, x, grF64s(v[2]), g, eps, mean, rstd)
			return nil
		}
		dx, err := G.ApplyOp(xo, in[0], in[1], dy)
		if err != nil {
			return nil, err
		}
		// dgain = Σ_rows dy∘x̂ (rows in order)
		gop := grNewKop("LayerNormFullGradGain", []int{2, 2}, 1)
		gop.shape = func(s []tensor.Shape) (tensor.Shape, error) { return tensor.Shape{s[0][1]}, nil }
		gop.fwd = func(dg []float64, v []*tensor.Dense) error {
			x, dY := grF64s(v[0]), grF64s(v[1])
			d := len(dg)
			rows := len(x) / d
			if err := ready(rows); err != nil {
				return err
			}
			clear(dg)
			for r := 0; r < rows; r++ {
				xr, gr := x[r*d:(r+1)*d], dY[r*d:(r+1)*d]
				mu, rs := mean[r], rstd[r]
				for j, xv := range xr {
					dg[j] += gr[j] * (xv - mu) * rs
				}
			}
			return nil
		}
		dg, err := G.ApplyOp(gop, in[0], dy)
		if err != nil {
			return nil, err
		}
		db, err := grColSumOp(dy, "LayerNormFullGradBias")
		if err != nil {
			return nil, err
		}
		return G.Nodes{dx, dg, db}, nil
	}
	return G.ApplyOp(o, x, gain, bias)
}

// ---------- Conv1D and tied output projection with trainable weights ----------

// grLinearFullOp computes x [N,in] · W [in,out] + b [out]; differentiable in x, W and b.
func grLinearFullOp(x, W, b *G.Node) (*G.Node, error) {
	return grDenseOp("LinearFull", x, W, b, false, true)
}

// grTiedLogitsFullOp computes x [N,d] · wteᵀ [d,V]; differentiable in x and wte (the embedding
// lookup adds its own contribution to d wte; gorgonia sums the two).
func grTiedLogitsFullOp(x, wte *G.Node) (*G.Node, error) {
	return grDenseOp("TiedLogitsFull", x, wte, nil, true, true)
}

// ---------- mean next-token negative log-likelihood ----------

// grLMLossOp returns the scalar −(1/C)·Σ_n w[n]·log softmax(logits[n])[tgt[n]] with C = Σ_n w[n]
// (0 when C = 0), for logits [N,V], targets tgt [N] and 0/1 weights w [N] (the shifted token
// mask: row n predicts token n+1). Differentiable in the logits. Per-row log-sum-exps are cached
// privately for the backward; the row terms are summed in row order.
func grLMLossOp(logits, tgt, w *G.Node) (*G.Node, error) {
	o := grNewKop("LMLoss", []int{2, 1, 1}, 0)
	var lse, terms []float64 // private caches
	var count float64
	o.shape = func(s []tensor.Shape) (tensor.Shape, error) {
		if len(s[0]) != 2 || len(s[1]) != 1 || s[1][0] != s[0][0] || len(s[2]) != 1 || s[2][0] != s[0][0] {
			return nil, fmt.Errorf("LMLoss: bad shapes %v %v %v", s[0], s[1], s[2])
		}
		return tensor.ScalarShape(), nil
	}
	o.fwd = func(out []float64, in []*tensor.Dense) error {
		lg, tg, wt := grF64s(in[0]), grF64s(in[1]), grF64s(in[2])
		V := in[0].Shape()[1]
		N := len(wt)
		if cap(lse) < N {
			lse, terms = make([]float64, N), make([]float64, N)
		}
		lse, terms = lse[:N], terms[:N]
		for n, tf := range tg {
			if t := int(tf); wt[n] != 0 && (t < 0 || t >= V) {
				return fmt.Errorf("target %v at %d outside [0,%d)", tf, n, V)
			}
		}
		grParallelFor(N, 32, func(_, lo, hi int) {
			for n := lo; n < hi; n++ {
				if wt[n] == 0 {
					lse[n], terms[n] = 0, 0
					continue
				}
				row := lg[n*V : (n+1)*V]
				lse[n] = grLogSumExp(row)
				terms[n] = wt[n] * (lse[n] - row[int(tg[n])])
			}
		})
		var s, c float64
		for n := range terms {
			s += terms[n]
			c += wt[n]
		}
		count = c
		out[0] = 0
		if c > 0 {
			out[0] = s / c
		}
		return nil
	}
	o.diff = []bool{true, false, false}
	o.sym = func(ins G.Nodes, _, dy *G.Node) (G.Nodes, error) {
		return grInputGradOp("LMLossGrad", 3, []int{2, 1, 1, 0}, func(dl []float64, in []*tensor.Dense) error {
			lg, tg, wt, gy := grF64s(in[0]), grF64s(in[1]), grF64s(in[2]), grF64s(in[3])[0]
			V := in[0].Shape()[1]
			if len(lse) != len(wt) {
				return fmt.Errorf("LMLossGrad before its forward")
			}
			scale := 0.0
			if count > 0 {
				scale = gy / count
			}
			grParallelFor(len(wt), 32, func(_, lo, hi int) {
				for n := lo; n < hi; n++ {
					d := dl[n*V : (n+1)*V]
					c := wt[n] * scale
					if c == 0 {
						clear(d)
						continue
					}
					grNLLGradRow(d, lg[n*V:(n+1)*V], lse[n], int(tg[n]), c)
				}
			})
			return nil
		}, ins[0], ins[1], ins[2], dy)
	}
	return G.ApplyOp(grScalarKop{o}, logits, tgt, w)
}

// ---------- packed rows: several documents per row ----------
