package model

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Ops on the float64 per-sequence vectors between the log-prob sums and the loss.

// grRangeOp returns x[lo:hi] of a vector (gradient scatters back with zeros elsewhere).
func grRangeOp(x *G.Node, lo, hi int) (*G.Node, error) {
	o := grNewKop[float64](fmt.Sprintf("Range[%d:%d]", lo, hi), []int{1}, 1)
	o.shape = func(s []tensor.Shape) (tensor.Shape, error) {
		if len(s[0]) != 1 || hi > s[0][0] || lo < 0 || lo >= hi {
			return nil, fmt.Errorf("Range[%d:%d] of shape %v", lo, hi, s[0])
		}
		return tensor.Shape{hi - lo}, nil
	}
	o.fwd = func(out []float64, in []*tensor.Dense) error {
		copy(out, grF64s(in[0])[lo:hi])
		return nil
	}
	o.diff = []bool{true}
	o.sym = func(ins G.Nodes, _, dy *G.Node) (G.Nodes, error) {
		return grInputGradOp(fmt.Sprintf("RangeGrad[%d:%d]", lo, hi), 1, []int{1, 1}, grTypes[float64]("dd"), func(dx []float64, in []*tensor.Dense) error {
			clear(dx)
			copy(dx[lo:hi], grF64s(in[1]))
			return nil
		}, ins[0], dy)
	}
	return G.ApplyOp(o, x)
}

// grPerTokenOp returns x / n elementwise for a vector x and constant counts n (no gradient to n).
// It replaces gorgonia's HadamardDiv, which the compiler may run in place over x: x is the
// per-sequence sums node whose value Step reports (see the defect notes in graph.go).
func grPerTokenOp(x, n *G.Node) (*G.Node, error) {
	o := grNewKop[float64]("PerToken", []int{1, 1}, 1)
	o.shape = func(s []tensor.Shape) (tensor.Shape, error) {
		if len(s[0]) != 1 || !s[0].Eq(s[1]) {
			return nil, fmt.Errorf("PerToken: shapes %v and %v", s[0], s[1])
		}
		return s[0].Clone(), nil
	}
	o.fwd = func(out []float64, in []*tensor.Dense) error {
		x, n := grF64s(in[0]), grF64s(in[1])
		for i := range out {
			out[i] = x[i] / n[i]
		}
		return nil
	}
	o.diff = []bool{true, false}
	o.sym = func(ins G.Nodes, _, dy *G.Node) (G.Nodes, error) {
		return grInputGradOp("PerTokenGrad", 2, []int{1, 1}, grTypes[float64]("dd"), func(dx []float64, in []*tensor.Dense) error {
			dy, n := grF64s(in[0]), grF64s(in[1])
			for i := range dx {
				dx[i] = dy[i] / n[i]
			}
			return nil
		}, dy, ins[1])
	}
	return G.ApplyOp(o, x, n)
}
