package model

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/bpo-dev/bpo/trainer/model/kernels"
)

// grEmbedAtOp looks tokens up in wte [V,d] and adds position embeddings wpe [P,d]; tok is a
// float64 vector of N = B*T token ids. The position of row n is pos[n] when pos is not nil (packed
// rows, positions restarting at 0 at every document), else n mod T. Differentiable in wte and wpe.
func grEmbedAtOp[F kernels.Float](wte, wpe, tok, pos *G.Node, T int) (*G.Node, error) {
	name, dims, args := "Embed", []int{2, 2, 1}, G.Nodes{wte, wpe, tok}
	if pos != nil {
		name, dims, args = "EmbedPos", []int{2, 2, 1, 1}, append(args, pos)
	}
	o := grNewKop[F](name, dims, 2).f64In(2)
	if pos != nil {
		o.f64In(3)
	}
	o.shape = func(s []tensor.Shape) (tensor.Shape, error) {
		ok := len(s[0]) == 2 && len(s[1]) == 2 && s[0][1] == s[1][1] && len(s[2]) == 1
		if pos == nil {
			ok = ok && s[1][0] >= T && s[2][0]%T == 0
		} else {
			ok = ok && s[2].Eq(s[3])
		}
		if !ok {
			return nil, fmt.Errorf("%s: bad shapes wte, wpe, tok[, pos] %v (T=%d)", name, s, T)
		}
		return tensor.Shape{s[2][0], s[0][1]}, nil
	}
	var toks, poss []int
	o.fwd = func(out []F, in []*tensor.Dense) error {
		V, d, P := in[0].Shape()[0], in[0].Shape()[1], in[1].Shape()[0]
		if err := grInts(&toks, grF64s(in[2]), V, "token"); err != nil {
			return err
		}
		if pos != nil {
			if err := grInts(&poss, grF64s(in[3]), P, "position"); err != nil {
				return err
			}
		} else {
			poss = grModPositions(poss, len(toks), T)
		}
		kernels.Embed(out, grS[F](in[0]), grS[F](in[1]), toks, poss, d)
		return nil
	}
	o.diff = make([]bool, len(dims))
	o.diff[0], o.diff[1] = true, true
	o.sym = func(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
		grads := make(G.Nodes, len(in))
		var err error
		if grads[0], err = grEmbedGradOp[F](grad, in[2], in[0], T, false); err != nil {
			return nil, err
		}
		if pos != nil { // a scatter by the position ids
			grads[1], err = grEmbedGradOp[F](grad, in[3], in[1], T, false)
		} else {
			grads[1], err = grEmbedGradOp[F](grad, in[2], in[1], T, true)
		}
		if err != nil {
			return nil, err
		}
		return grads, nil
	}
	return G.ApplyOp(o, args...)
}

// grModPositions returns n mod T for n in [0,N), reusing buf.
func grModPositions(buf []int, N, T int) []int {
	if cap(buf) < N {
		buf = make([]int, N)
	}
	buf = buf[:N]
	for n := range buf {
		buf[n] = n % T
	}
	return buf
}

// grEmbedGradOp scatters dy [N,d] into a table shaped like like: by the index vector ids
// (positions=false) or by position n mod T (positions=true).
func grEmbedGradOp[F kernels.Float](dy, ids, like *G.Node, T int, positions bool) (*G.Node, error) {
	o := grNewKop[F]("EmbedGrad", []int{2, 1, 2}, 2).f64In(1)
	o.shape = func(s []tensor.Shape) (tensor.Shape, error) { return s[2].Clone(), nil }
	var idx []int
	o.fwd = func(out []F, in []*tensor.Dense) error {
		rows, d := in[2].Shape()[0], in[2].Shape()[1]
		if positions {
			idx = grModPositions(idx, len(grF64s(in[1])), T)
		} else if err := grInts(&idx, grF64s(in[1]), rows, "index"); err != nil {
			return err
		}
		clear(out)
		kernels.EmbedBackward(out, grS[F](in[0]), idx, d)
		return nil
	}
	return G.ApplyOp(o, dy, ids, like)
}
