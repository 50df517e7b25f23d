package model

import (
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/bpo-dev/bpo/trainer/model/kernels"
)

// grGeluOp applies gelu_new elementwise; the backward recomputes the tanh from its input.
func grGeluOp[F kernels.Float](x *G.Node) (*G.Node, error) {
	o := grNewKop[F]("GeluNew", []int{2}, 2)
	o.shape = func(s []tensor.Shape) (tensor.Shape, error) { return s[0].Clone(), nil }
	o.fwd = func(out []F, in []*tensor.Dense) error {
		kernels.Gelu(out, grS[F](in[0]))
		return nil
	}
	o.diff = []bool{true}
	o.sym = func(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
		return grInputGradOp("GeluNewGrad", 1, []int{2, 2}, grTypes[F]("FF"), func(dx []F, in []*tensor.Dense) error {
			kernels.GeluBackward(dx, grS[F](in[0]), grS[F](in[1]))
			return nil
		}, in[0], grad)
	}
	return G.ApplyOp(o, x)
}
