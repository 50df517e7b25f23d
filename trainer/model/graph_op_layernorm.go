package model

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/bpo-dev/bpo/trainer/model/kernels"
)

// grLayerNormOp is LayerNorm over the last axis of x [N,d] with frozen gain and bias (the
// preference and LoRA graphs); differentiable in x. The row statistics are recomputed in the
// backward rather than cached: the op may be run forward-only by one machine and backward by
// another.
func grLayerNormOp[F kernels.Float](x *G.Node, gain, bias []F, eps float64) (*G.Node, error) {
	d := len(gain)
	o := grNewKop[F]("LayerNorm", []int{2}, 2)
	o.shape = func(s []tensor.Shape) (tensor.Shape, error) {
		return s[0].Clone(), grShapeIs("LayerNorm x", s[0], -1, d)
	}
	o.fwd = func(out []F, in []*tensor.Dense) error {
		kernels.LayerNorm(out, grS[F](in[0]), gain, bias, d, eps, nil, nil)
		return nil
	}
	o.diff = []bool{true}
	o.sym = func(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
		return grInputGradOp("LayerNormGrad", 1, []int{2, 2}, grTypes[F]("FF"), func(dx []F, v []*tensor.Dense) error {
			kernels.LayerNormBackward(dx, grS[F](v[0]), grS[F](v[1]), gain, d, eps, nil, nil)
			return nil
		}, in[0], grad)
	}
	return G.ApplyOp(o, x)
}

// grLayerNormFullOp is LayerNorm over the last axis of x [N,d] with gain [d] and bias [d] as
// graph inputs (the full-parameter LM graph); differentiable in all three. Row means and inverse
// deviations are cached privately for the backward.
func grLayerNormFullOp[F kernels.Float](x, gain, bias *G.Node, eps float64) (*G.Node, error) {
	o := grNewKop[F]("LayerNormFull", []int{2, 1, 1}, 2)
	var mean, rstd []float64 // private caches, one per row
	o.shape = func(s []tensor.Shape) (tensor.Shape, error) {
		if len(s[0]) != 2 || len(s[1]) != 1 || !s[1].Eq(s[2]) || s[0][1] != s[1][0] {
			return nil, fmt.Errorf("LayerNormFull: bad shapes x %v gain %v bias %v", s[0], s[1], s[2])
		}
		return s[0].Clone(), nil
	}
	o.fwd = func(out []F, in []*tensor.Dense) error {
		x, g := grS[F](in[0]), grS[F](in[1])
		rows := len(x) / len(g)
		if cap(mean) < rows {
			mean, rstd = make([]float64, rows), make([]float64, rows)
		}
		mean, rstd = mean[:rows], rstd[:rows]
		kernels.LayerNorm(out, x, g, grS[F](in[2]), len(g), eps, mean, rstd)
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
		xo := grNewKop[F]("LayerNormFullGradX", []int{2, 1, 2}, 2)
		xo.shape = func(s []tensor.Shape) (tensor.Shape, error) { return s[0].Clone(), nil }
		xo.fwd = func(dx []F, v []*tensor.Dense) error {
			x, g := grS[F](v[0]), grS[F](v[1])
			if err := ready(len(x) / len(g)); err != nil {
				return err
			}
			kernels.LayerNormBackward(dx, x, grS[F](v[2]), g, len(g), eps, mean, rstd)
			return nil
		}
		dx, err := G.ApplyOp(xo, in[0], in[1], dy)
		if err != nil {
			return nil, err
		}
		// d gain = Σ_rows dy∘x̂ (rows in order); d bias is the column sum of dy
		gop := grNewKop[F]("LayerNormFullGradGain", []int{2, 2}, 1)
		gop.shape = func(s []tensor.Shape) (tensor.Shape, error) { return tensor.Shape{s[0][1]}, nil }
		gop.fwd = func(dg []F, v []*tensor.Dense) error {
			x := grS[F](v[0])
			if err := ready(len(x) / len(dg)); err != nil {
				return err
			}
			kernels.LayerNormParamBackward(dg, nil, x, grS[F](v[1]), len(dg), mean, rstd)
			return nil
		}
		dg, err := G.ApplyOp(gop, in[0], dy)
		if err != nil {
			return nil, err
		}
		db, err := grColSumOp[F](dy, "LayerNormFullGradBias")
		if err != nil {
			return nil, err
		}
		return G.Nodes{dx, dg, db}, nil
	}
	return G.ApplyOp(o, x, gain, bias)
}
