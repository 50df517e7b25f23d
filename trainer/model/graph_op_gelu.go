package model

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/bpo-dev/bpo/trainer/model/kernels"
)

// grGeluOp applies gelu_new elementwise. The forward keeps the derivative at every element in a
// private cache (one transcendental per element and step); the backward multiplies by it.
func grGeluOp[F kernels.Float](x *G.Node) (*G.Node, error) {
	o := grNewKop[F]("GeluNew", []int{2}, 2)
	var dydx []F // private cache: gelu_new'(x)
	o.shape = func(s []tensor.Shape) (tensor.Shape, error) { return s[0].Clone(), nil }
	o.fwd = func(out []F, in []*tensor.Dense) error {
		x := grS[F](in[0])
		if cap(dydx) < len(x) {
			dydx = make([]F, len(x))
		}
		dydx = dydx[:len(x)]
		kernels.Gelu(out, dydx, x)
		return nil
	}
	o.diff = []bool{true}
	o.sym = func(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
		// x is an input only to order the backward after the forward that filled the cache.
		return grInputGradOp("GeluNewGrad", 1, []int{2, 2}, grTypes[F]("FF"), func(dx []F, in []*tensor.Dense) error {
			if len(dydx) != len(dx) {
				return fmt.Errorf("GeluNewGrad before its forward")
			}
			kernels.GeluBackward(dx, grS[F](in[1]), dydx)
			return nil
		}, in[0], grad)
	}
	return G.ApplyOp(o, x)
}
