package model

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/bpo-dev/bpo/trainer/model/kernels"
)

// grSeqLogProbOp returns, per sequence b, Σ_t w[b·T+t] · log softmax(logits[b·T+t])[tgt[b·T+t]]
// for logits [N,V] (the graph's dtype), targets tgt [N] and weights w [N] (0/1 response mask
// already shifted so that row n predicts token n+1). The sums are float64 in every precision.
// Rows with weight 0 are neither computed nor differentiated. Per-row log-sum-exps are cached
// privately for the backward.
func grSeqLogProbOp[F kernels.Float](logits, tgt, w *G.Node, batch int) (*G.Node, error) {
	o := grNewKop[float64]("SeqLogProb", []int{2, 1, 1}, 1)
	o.inTypes[0] = grDtype[F]()
	o.shape = func(s []tensor.Shape) (tensor.Shape, error) {
		if len(s[0]) != 2 || s[0][0]%batch != 0 || len(s[1]) != 1 || s[1][0] != s[0][0] || len(s[2]) != 1 || s[2][0] != s[0][0] {
			return nil, fmt.Errorf("SeqLogProb: bad shapes %v %v %v", s[0], s[1], s[2])
		}
		return tensor.Shape{batch}, nil
	}
	var terms, lse []float64 // per row: terms summed in row order after the parallel part; log-sum-exps for the backward
	o.fwd = func(out []float64, in []*tensor.Dense) error {
		lg, tg, wt := grS[F](in[0]), grF64s(in[1]), grF64s(in[2])
		V := in[0].Shape()[1]
		T := len(tg) / batch
		if err := grCheckTargets(tg, wt, V); err != nil {
			return err
		}
		if cap(lse) < len(wt) {
			lse = make([]float64, len(wt))
		}
		lse = lse[:len(wt)]
		terms = grRowTerms(terms, len(wt), func(n int) float64 {
			row := lg[n*V : (n+1)*V]
			lse[n] = kernels.LogSumExp(row)
			return wt[n] * (float64(row[int(tg[n])]) - lse[n])
		}, wt)
		clear(out)
		for n, t := range terms {
			out[n/T] += t
		}
		return nil
	}
	o.diff = []bool{true, false, false}
	o.sym = func(ins G.Nodes, _, dy *G.Node) (G.Nodes, error) {
		return grInputGradOp("SeqLogProbGrad", 3, []int{2, 1, 1, 1}, grTypes[F]("Fddd"), func(dl []F, in []*tensor.Dense) error {
			lg, tg, wt, gs := grS[F](in[0]), grF64s(in[1]), grF64s(in[2]), grF64s(in[3])
			V := in[0].Shape()[1]
			T := len(tg) / batch
			if len(lse) != len(wt) {
				return fmt.Errorf("SeqLogProbGrad before its forward")
			}
			kernels.For(len(wt), 16, func(_, lo, hi int) {
				for n := lo; n < hi; n++ {
					d := dl[n*V : (n+1)*V]
					c := wt[n] * gs[n/T]
					if c == 0 {
						clear(d)
						continue
					}
					// the sum has the sign of a log-prob: −(gradient of the NLL)
					kernels.LogSoftmaxBackward(d, lg[n*V:(n+1)*V], lse[n], int(tg[n]), -c)
				}
			})
			return nil
		}, ins[0], ins[1], ins[2], dy)
	}
	return G.ApplyOp(o, logits, tgt, w)
}

// grCheckTargets reports a weighted target outside the vocabulary.
func grCheckTargets(tg, wt []float64, V int) error {
	for n, tf := range tg {
		if t := int(tf); wt[n] != 0 && (t < 0 || t >= V || float64(t) != tf) {
			return fmt.Errorf("target %v at %d outside [0,%d)", tf, n, V)
		}
	}
	return nil
}

// grRowTerms evaluates term(n) for the rows with a non-zero weight, in parallel, into buf
// (reused; 0 for the others).
func grRowTerms(buf []float64, N int, term func(n int) float64, wt []float64) []float64 {
	if cap(buf) < N {
		buf = make([]float64, N)
	}
	buf = buf[:N]
	kernels.For(N, 16, func(_, lo, hi int) {
		for n := lo; n < hi; n++ {
			buf[n] = 0
			if wt[n] != 0 {
				buf[n] = term(n)
			}
		}
	})
	return buf
}

// grLMLossOp returns the scalar −(1/C)·Σ_n w[n]·log softmax(logits[n])[tgt[n]] with C = Σ_n w[n]
// (0 when C = 0), for logits [N,V], targets tgt [N] and 0/1 weights w [N] (the shifted token
// mask: row n predicts token n+1). Differentiable in the logits. Per-row log-sum-exps are cached
// privately for the backward; the row terms are summed in row order.
func grLMLossOp[F kernels.Float](logits, tgt, w *G.Node) (*G.Node, error) {
	o := grNewKop[float64]("LMLoss", []int{2, 1, 1}, 0)
	o.inTypes[0] = grDtype[F]()
	var lse, terms []float64 // private caches
	var count float64
	o.shape = func(s []tensor.Shape) (tensor.Shape, error) {
		if len(s[0]) != 2 || len(s[1]) != 1 || s[1][0] != s[0][0] || len(s[2]) != 1 || s[2][0] != s[0][0] {
			return nil, fmt.Errorf("LMLoss: bad shapes %v %v %v", s[0], s[1], s[2])
		}
		return tensor.ScalarShape(), nil
	}
	o.fwd = func(out []float64, in []*tensor.Dense) error {
		lg, tg, wt := grS[F](in[0]), grF64s(in[1]), grF64s(in[2])
		V := in[0].Shape()[1]
		N := len(wt)
		if err := grCheckTargets(tg, wt, V); err != nil {
			return err
		}
		if cap(lse) < N {
			lse = make([]float64, N)
		}
		lse = lse[:N]
		terms = grRowTerms(terms, N, func(n int) float64 {
			row := lg[n*V : (n+1)*V]
			lse[n] = kernels.LogSumExp(row)
			return wt[n] * (lse[n] - float64(row[int(tg[n])]))
		}, wt)
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
		return grInputGradOp("LMLossGrad", 3, []int{2, 1, 1, 0}, grTypes[F]("Fddd"), func(dl []F, in []*tensor.Dense) error {
			lg, tg, wt, gy := grS[F](in[0]), grF64s(in[1]), grF64s(in[2]), grF64s(in[3])[0]
			V := in[0].Shape()[1]
			if len(lse) != len(wt) {
				return fmt.Errorf("LMLossGrad before its forward")
			}
			scale := 0.0
			if count > 0 {
				scale = gy / count
			}
			kernels.For(len(wt), 16, func(_, lo, hi int) {
				for n := lo; n < hi; n++ {
					d := dl[n*V : (n+1)*V]
					c := wt[n] * scale
					if c == 0 {
						clear(d)
						continue
					}
					kernels.LogSoftmaxBackward(d, lg[n*V:(n+1)*V], lse[n], int(tg[n]), c)
				}
			})
			return nil
		}, ins[0], ins[1], ins[2], dy)
	}
	return G.ApplyOp(grScalarKop[float64]{o}, logits, tgt, w)
}
