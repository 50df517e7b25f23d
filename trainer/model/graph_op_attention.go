package model

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/bpo-dev/bpo/trainer/model/kernels"
)

// grCausalAttentionOp splits qkv [N,3d] (q|k|v, heads contiguous inside each) into B·H heads of
// [T,dh], runs kernels.Attention per (sequence, head) and merges the heads back to [N,d]. Token i
// attends to the tokens [start[i], i] of its row: start [N] (float64) holds the row-local document
// starts of packed rows, nil means 0 everywhere (plain causal). Probabilities are cached privately
// for the backward.
func grCausalAttentionOp[F kernels.Float](qkv, start *G.Node, batch, T, d, heads int) (*G.Node, error) {
	dh := d / heads
	BH := batch * heads
	probs := make([]F, BH*T*T) // private cache
	var starts []int
	name, dims, args := "CausalSelfAttention", []int{2}, G.Nodes{qkv}
	if start != nil {
		name, dims, args = "SegmentedCausalSelfAttention", []int{2, 1}, append(args, start)
	}
	o := grNewKop[F](name, dims, 2)
	if start != nil {
		o.f64In(1)
	}
	o.shape = func(s []tensor.Shape) (tensor.Shape, error) {
		if err := grShapeIs("attention qkv", s[0], batch*T, 3*d); err != nil {
			return nil, err
		}
		if start != nil {
			if err := grShapeIs("attention starts", s[1], batch*T); err != nil {
				return nil, err
			}
		}
		return tensor.Shape{batch * T, d}, nil
	}
	// rowStarts returns the starts of row b (nil without document starts).
	rowStarts := func(b int) []int {
		if starts == nil {
			return nil
		}
		return starts[b*T : (b+1)*T]
	}
	o.fwd = func(y []F, in []*tensor.Dense) error {
		qkv := grS[F](in[0])
		if start != nil {
			if err := grInts(&starts, grF64s(in[1]), T, "segment start"); err != nil {
				return err
			}
			for n, s := range starts {
				if s > n%T {
					return fmt.Errorf("segment start %d of row position %d", s, n%T)
				}
			}
		}
		ld := 3 * d
		kernels.For(BH, 1, func(_, lo, hi int) {
			for bh := lo; bh < hi; bh++ {
				b, h := bh/heads, bh%heads
				q, k, v := grHeadQKV(qkv, b*T*ld, d, h*dh)
				kernels.Attention(y[b*T*d+h*dh:], d, q, ld, k, v, ld, T, 0, dh, probs[bh*T*T:(bh+1)*T*T], rowStarts(b))
			}
		})
		return nil
	}
	o.diff = make([]bool, len(dims))
	o.diff[0] = true
	o.sym = func(ins G.Nodes, _, dy *G.Node) (G.Nodes, error) {
		var scratch [][]F // per worker, T·T each
		spec := "FF"      // qkv, dy
		if start != nil {
			spec = "FdF" // qkv, starts, dy
		}
		types := grTypes[F](spec)
		return grInputGradOp(name+"Grad", len(ins), append(dims[:len(dims):len(dims)], 2), types, func(dqkv []F, in []*tensor.Dense) error {
			qkv, dY := grS[F](in[0]), grS[F](in[len(in)-1])
			ld := 3 * d
			for len(scratch) < kernels.Workers() { // the thread count may have been raised
				scratch = append(scratch, nil)
			}
			kernels.For(BH, 1, func(w, lo, hi int) {
				if len(scratch[w]) != T*T {
					scratch[w] = make([]F, T*T)
				}
				for bh := lo; bh < hi; bh++ {
					b, h := bh/heads, bh%heads
					q, k, v := grHeadQKV(qkv, b*T*ld, d, h*dh)
					dq, dk, dv := grHeadQKV(dqkv, b*T*ld, d, h*dh)
					kernels.AttentionBackward(dq, dk, dv, ld, q, k, v, dY[b*T*d+h*dh:], d,
						probs[bh*T*T:(bh+1)*T*T], scratch[w], T, dh, rowStarts(b))
				}
			})
			return nil
		}, append(ins[:len(ins):len(ins)], dy)...)
	}
	return G.ApplyOp(o, args...)
}

// grHeadQKV returns the q, k and v columns of head offset off (h·dh) in the rows of one sequence
// (from base) of a [N,3d] buffer.
func grHeadQKV[F kernels.Float](buf []F, base, d, off int) (q, k, v []F) {
	return buf[base+off:], buf[base+d+off:], buf[base+2*d+off:]
}
