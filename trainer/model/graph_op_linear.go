package model

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/bpo-dev/bpo/trainer/model/kernels"
)

// grLoraParams holds the frozen base projection and the adapter scale, read at run time.
type grLoraParams[F kernels.Float] struct {
	W     []F // [in,out]
	Bias  []F // [out]
	In    int
	Out   int
	Rank  int
	Scale *float64 // alpha/r, set per step; 0 disables the adapter path (A, B are then not read)
}

// grLoraLinearOp is a Conv1D with LoRA: y = x·W + b + s·(x·A)·B with W, b frozen, for x [N,in];
// differentiable in x, A [in,r] and B [r,out].
func grLoraLinearOp[F kernels.Float](x, A, B *G.Node, p *grLoraParams[F]) (*G.Node, error) {
	in, out, r := p.In, p.Out, p.Rank
	o := grNewKop[F]("LoRALinear", []int{2, 2, 2}, 2)
	var xa []F // private cache of x·A [N,r], reused by the dB op
	o.shape = func(s []tensor.Shape) (tensor.Shape, error) {
		if err := grShapeIs("LoRA x", s[0], -1, in); err != nil {
			return nil, err
		}
		if err := grShapeIs("LoRA A", s[1], in, r); err != nil {
			return nil, err
		}
		if err := grShapeIs("LoRA B", s[2], r, out); err != nil {
			return nil, err
		}
		return tensor.Shape{s[0][0], out}, nil
	}
	o.fwd = func(y []F, ins []*tensor.Dense) error {
		x := grS[F](ins[0])
		n := len(x) / in
		kernels.Linear(y, x, p.W, p.Bias, n, in, out, false, false)
		if s := *p.Scale; s != 0 {
			if cap(xa) < n*r {
				xa = make([]F, n*r)
			}
			xa = xa[:n*r]
			kernels.LoRA(y, x, grS[F](ins[1]), grS[F](ins[2]), xa, n, in, out, r, F(s))
		}
		return nil
	}
	o.diff = []bool{true, true, true}
	o.sym = func(ins G.Nodes, _, dy *G.Node) (G.Nodes, error) {
		x, A, B := ins[0], ins[1], ins[2]
		// u = s·dy·Bᵀ [N,r], shared by dx and dA
		uo := grNewKop[F]("LoRAGradU", []int{2, 2}, 2)
		uo.shape = func(s []tensor.Shape) (tensor.Shape, error) { return tensor.Shape{s[0][0], r}, nil }
		uo.fwd = func(u []F, v []*tensor.Dense) error {
			dy := grS[F](v[0])
			kernels.LoRABackwardU(u, dy, grS[F](v[1]), len(dy)/out, out, r, F(*p.Scale))
			return nil
		}
		u, err := G.ApplyOp(uo, dy, B)
		if err != nil {
			return nil, err
		}
		// dx = dy·Wᵀ + u·Aᵀ
		xo := grNewKop[F]("LoRAGradX", []int{2, 2, 2}, 2)
		xo.shape = func(s []tensor.Shape) (tensor.Shape, error) { return tensor.Shape{s[0][0], in}, nil }
		xo.fwd = func(dx []F, v []*tensor.Dense) error {
			dy := grS[F](v[0])
			n := len(dy) / out
			kernels.LinearBackwardX(dx, dy, p.W, n, in, out, false, false)
			if *p.Scale != 0 {
				kernels.LoRABackwardX(dx, grS[F](v[1]), grS[F](v[2]), n, in, r)
			}
			return nil
		}
		dx, err := G.ApplyOp(xo, dy, u, A)
		if err != nil {
			return nil, err
		}
		// dA = xᵀ·u
		ao := grNewKop[F]("LoRAGradA", []int{2, 2}, 2)
		ao.shape = func(s []tensor.Shape) (tensor.Shape, error) { return tensor.Shape{in, r}, nil }
		ao.fwd = func(da []F, v []*tensor.Dense) error {
			x := grS[F](v[0])
			kernels.LoRABackwardA(da, x, grS[F](v[1]), len(x)/in, in, r)
			return nil
		}
		dA, err := G.ApplyOp(ao, x, u)
		if err != nil {
			return nil, err
		}
		// dB = s·(x·A)ᵀ·dy, x·A from the forward cache (it depends on dy only for ordering)
		bo := grNewKop[F]("LoRAGradB", []int{2}, 2)
		bo.shape = func(s []tensor.Shape) (tensor.Shape, error) { return tensor.Shape{r, out}, nil }
		bo.fwd = func(db []F, v []*tensor.Dense) error {
			dy := grS[F](v[0])
			n := len(dy) / out
			s := *p.Scale
			if s == 0 || len(xa) != n*r {
				clear(db)
				return nil
			}
			kernels.LoRABackwardB(db, xa, dy, n, out, r, F(s))
			return nil
		}
		dB, err := G.ApplyOp(bo, dy)
		if err != nil {
			return nil, err
		}
		return G.Nodes{dx, dA, dB}, nil
	}
	return G.ApplyOp(o, x, A, B)
}

// grTiedLogitsOp computes x [N,d] · wteᵀ [d,V]; differentiable in x only (wte is frozen).
func grTiedLogitsOp[F kernels.Float](x, wte *G.Node) (*G.Node, error) {
	return grDenseOp[F]("TiedLogits", x, wte, nil, true, false)
}

// grLinearFullOp computes x [N,in] · W [in,out] + b [out]; differentiable in x, W and b.
func grLinearFullOp[F kernels.Float](x, W, b *G.Node) (*G.Node, error) {
	return grDenseOp[F]("LinearFull", x, W, b, false, true)
}

// grTiedLogitsFullOp computes x [N,d] · wteᵀ [d,V]; differentiable in x and wte (the embedding
// lookup adds its own contribution to d wte; gorgonia sums the two).
func grTiedLogitsFullOp[F kernels.Float](x, wte *G.Node) (*G.Node, error) {
	return grDenseOp[F]("TiedLogitsFull", x, wte, nil, true, true)
}

// grDenseOp computes y = x·W + b for x [N,in] and W [in,out], or y = x·Wᵀ for W [out,in] when
// transW; b may be nil. Differentiable in x, and in W and b when trainW (else W is frozen).
func grDenseOp[F kernels.Float](name string, x, W, b *G.Node, transW, trainW bool) (*G.Node, error) {
	dims, args := []int{2, 2}, G.Nodes{x, W}
	if b != nil {
		dims, args = append(dims, 1), append(args, b)
	}
	inOut := func(w tensor.Shape) (in, out int) {
		if transW {
			return w[1], w[0]
		}
		return w[0], w[1]
	}
	o := grNewKop[F](name, dims, 2)
	o.shape = func(s []tensor.Shape) (tensor.Shape, error) {
		if len(s[0]) != 2 || len(s[1]) != 2 {
			return nil, fmt.Errorf("%s: bad shapes x, W[, b] %v", name, s)
		}
		in, out := inOut(s[1])
		if s[0][1] != in || (b != nil && (len(s[2]) != 1 || s[2][0] != out)) {
			return nil, fmt.Errorf("%s: bad shapes x, W[, b] %v", name, s)
		}
		return tensor.Shape{s[0][0], out}, nil
	}
	o.fwd = func(y []F, v []*tensor.Dense) error {
		var bias []F
		if b != nil {
			bias = grS[F](v[2])
		}
		in, out := inOut(v[1].Shape())
		x := grS[F](v[0])
		kernels.Linear(y, x, grS[F](v[1]), bias, len(x)/in, in, out, transW, false)
		return nil
	}
	o.diff = []bool{true, trainW, trainW}[:len(dims)]
	o.sym = func(ins G.Nodes, _, dy *G.Node) (G.Nodes, error) {
		grads := make(G.Nodes, len(ins))
		xo := grNewKop[F](name+"GradX", []int{2, 2}, 2)
		xo.shape = func(s []tensor.Shape) (tensor.Shape, error) {
			in, _ := inOut(s[1])
			return tensor.Shape{s[0][0], in}, nil
		}
		xo.fwd = func(dx []F, v []*tensor.Dense) error {
			in, out := inOut(v[1].Shape())
			dy := grS[F](v[0])
			kernels.LinearBackwardX(dx, dy, grS[F](v[1]), len(dy)/out, in, out, transW, false)
			return nil
		}
		var err error
		if grads[0], err = G.ApplyOp(xo, dy, ins[1]); err != nil || !trainW {
			return grads, err
		}
		wo := grNewKop[F](name+"GradW", []int{2, 2}, 2)
		wo.shape = func(s []tensor.Shape) (tensor.Shape, error) {
			if transW {
				return tensor.Shape{s[1][1], s[0][1]}, nil
			}
			return tensor.Shape{s[0][1], s[1][1]}, nil
		}
		wo.fwd = func(dw []F, v []*tensor.Dense) error {
			in, out := v[0].Shape()[1], v[1].Shape()[1]
			x := grS[F](v[0])
			kernels.LinearBackwardW(dw, x, grS[F](v[1]), len(x)/in, in, out, transW)
			return nil
		}
		if grads[1], err = G.ApplyOp(wo, ins[0], dy); err != nil {
			return nil, err
		}
		if b != nil {
			if grads[2], err = grColSumOp[F](dy, name+"GradB"); err != nil {
				return nil, err
			}
		}
		return grads, nil
	}
	return G.ApplyOp(o, args...)
}

// grColSumOp sums a matrix [N,k] over its rows (in row order) into a vector [k]: the gradient of
// a bias added to every row.
func grColSumOp[F kernels.Float](dy *G.Node, name string) (*G.Node, error) {
	o := grNewKop[F](name, []int{2}, 1)
	o.shape = func(s []tensor.Shape) (tensor.Shape, error) { return tensor.Shape{s[0][1]}, nil }
	o.fwd = func(db []F, v []*tensor.Dense) error {
		kernels.BiasBackward(db, grS[F](v[0]))
		return nil
	}
	return G.ApplyOp(o, dy)
}
