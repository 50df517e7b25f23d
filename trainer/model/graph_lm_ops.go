package model

// Fused ops of the language-model graph (graph_lm.go) that the preference graph does not need:
// the full-parameter variants of LayerNorm, Conv1D and the tied output projection, whose gain,
// bias, weight and wte are graph inputs with gradients, and the mean next-token negative
// log-likelihood. They follow the rules of graph_ops.go (every output fully written on every
// call; private caches are never outputs) and reuse its kernels (grGemm, grParallelFor,
// grMeanRstd, grLogSumExp). Every reduction over rows runs in a fixed order, so results do not
// depend on GOMAXPROCS. Gradients are checked against finite differences in
// graph_lm_test.go.

import (
	"fmt"
	"math"

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
		x, g, b := grF64s(in[0]), grF64s(in[1]), grF64s(in[2])
		d := len(g)
		rows := len(x) / d
		if cap(mean) < rows {
			mean, rstd = make([]float64, rows), make([]float64, rows)
		}
		mean, rstd = mean[:rows], rstd[:rows]
		grParallelFor(rows, 256, func(_, lo, hi int) {
			for r := lo; r < hi; r++ {
				xr, yr := x[r*d:(r+1)*d], out[r*d:(r+1)*d]
				mu, rs := grMeanRstd(xr, eps)
				mean[r], rstd[r] = mu, rs
				for j, v := range xr {
					yr[j] = (v-mu)*rs*g[j] + b[j]
				}
			}
		})
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
		// dx = rstd · (g∘dy − mean(g∘dy) − x̂·mean(g∘dy∘x̂))
		xo := grNewKop("LayerNormFullGradX", []int{2, 1, 2}, 2)
		xo.shape = func(s []tensor.Shape) (tensor.Shape, error) { return s[0].Clone(), nil }
		xo.fwd = func(dx []float64, v []*tensor.Dense) error {
			x, g, dY := grF64s(v[0]), grF64s(v[1]), grF64s(v[2])
			d := len(g)
			rows := len(x) / d
			if err := ready(rows); err != nil {
				return err
			}
			grParallelFor(rows, 256, func(_, lo, hi int) {
				for r := lo; r < hi; r++ {
					xr, gr, dr := x[r*d:(r+1)*d], dY[r*d:(r+1)*d], dx[r*d:(r+1)*d]
					mu, rs := mean[r], rstd[r]
					var m1, m2 float64
					for j, xv := range xr {
						gh := gr[j] * g[j]
						m1 += gh
						m2 += gh * (xv - mu) * rs
					}
					m1 /= float64(d)
					m2 /= float64(d)
					for j, xv := range xr {
						dr[j] = rs * (gr[j]*g[j] - m1 - (xv-mu)*rs*m2)
					}
				}
			})
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

// grColSumOp sums a matrix [N,k] over its rows (in row order) into a vector [k]: the gradient of
// a bias added to every row.
func grColSumOp(dy *G.Node, name string) (*G.Node, error) {
	o := grNewKop(name, []int{2}, 1)
	o.shape = func(s []tensor.Shape) (tensor.Shape, error) { return tensor.Shape{s[0][1]}, nil }
	o.fwd = func(db []float64, v []*tensor.Dense) error {
		dY := grF64s(v[0])
		k := len(db)
		clear(db)
		for r := 0; r < len(dY)/k; r++ {
			row := dY[r*k : (r+1)*k]
			for j, g := range row {
				db[j] += g
			}
		}
		return nil
	}
	return G.ApplyOp(o, dy)
}

// ---------- Conv1D with trainable weight and bias: y = x·W + b ----------

// grLinearFullOp computes x [N,in] · W [in,out] + b [out]; differentiable in x, W and b.
func grLinearFullOp(x, W, b *G.Node) (*G.Node, error) {
	o := grNewKop("LinearFull", []int{2, 2, 1}, 2)
	o.shape = func(s []tensor.Shape) (tensor.Shape, error) {
		if len(s[0]) != 2 || len(s[1]) != 2 || len(s[2]) != 1 || s[0][1] != s[1][0] || s[1][1] != s[2][0] {
			return nil, fmt.Errorf("LinearFull: bad shapes x %v W %v b %v", s[0], s[1], s[2])
		}
		return tensor.Shape{s[0][0], s[1][1]}, nil
	}
	o.fwd = func(y []float64, v []*tensor.Dense) error {
		x, w, bias := grF64s(v[0]), grF64s(v[1]), grF64s(v[2])
		in, out := v[1].Shape()[0], v[1].Shape()[1]
		n := len(x) / in
		for i := 0; i < n; i++ {
			copy(y[i*out:(i+1)*out], bias)
		}
		grGemm(false, false, n, out, in, 1, x, in, w, out, 1, y, out)
		return nil
	}
	o.diff = []bool{true, true, true}
	o.sym = func(ins G.Nodes, _, dy *G.Node) (G.Nodes, error) {
		// dx = dy·Wᵀ
		xo := grNewKop("LinearFullGradX", []int{2, 2}, 2)
		xo.shape = func(s []tensor.Shape) (tensor.Shape, error) { return tensor.Shape{s[0][0], s[1][0]}, nil }
		xo.fwd = func(dx []float64, v []*tensor.Dense) error {
			dY, w := grF64s(v[0]), grF64s(v[1])
			in, out := v[1].Shape()[0], v[1].Shape()[1]
			grGemm(false, true, len(dY)/out, in, out, 1, dY, out, w, out, 0, dx, in)
			return nil
		}
		dx, err := G.ApplyOp(xo, dy, ins[1])
		if err != nil {
			return nil, err
		}
		// dW = xᵀ·dy
		wo := grNewKop("LinearFullGradW", []int{2, 2}, 2)
		wo.shape = func(s []tensor.Shape) (tensor.Shape, error) { return tensor.Shape{s[0][1], s[1][1]}, nil }
		wo.fwd = func(dw []float64, v []*tensor.Dense) error {
			x, dY := grF64s(v[0]), grF64s(v[1])
			in, out := v[0].Shape()[1], v[1].Shape()[1]
			grGemm(true, false, in, out, len(x)/in, 1, x, in, dY, out, 0, dw, out)
			return nil
		}
		dW, err := G.ApplyOp(wo, ins[0], dy)
		if err != nil {
			return nil, err
		}
		db, err := grColSumOp(dy, "LinearFullGradB")
		if err != nil {
			return nil, err
		}
		return G.Nodes{dx, dW, db}, nil
	}
	return G.ApplyOp(o, x, W, b)
}

// ---------- tied output projection, differentiable in wte ----------

// grTiedLogitsFullOp computes x [N,d] · wteᵀ [d,V]; differentiable in x and wte (the embedding
// lookup adds its own contribution to d wte; gorgonia sums the two).
func grTiedLogitsFullOp(x, wte *G.Node) (*G.Node, error) {
	o := grNewKop("TiedLogitsFull", []int{2, 2}, 2)
	o.shape = func(s []tensor.Shape) (tensor.Shape, error) {
		if len(s[0]) != 2 || len(s[1]) != 2 || s[0][1] != s[1][1] {
			return nil, fmt.Errorf("TiedLogitsFull: bad shapes %v %v", s[0], s[1])
		}
		return tensor.Shape{s[0][0], s[1][0]}, nil
	}
	o.fwd = func(y []float64, in []*tensor.Dense) error {
		x, w := grF64s(in[0]), grF64s(in[1])
		V, d := in[1].Shape()[0], in[1].Shape()[1]
		grGemm(false, true, len(x)/d, V, d, 1, x, d, w, d, 0, y, V)
		return nil
	}
	o.diff = []bool{true, true}
	o.sym = func(ins G.Nodes, _, dy *G.Node) (G.Nodes, error) {
		xo := grNewKop("TiedLogitsFullGradX", []int{2, 2}, 2)
		xo.shape = func(s []tensor.Shape) (tensor.Shape, error) { return tensor.Shape{s[0][0], s[1][1]}, nil }
		xo.fwd = func(dx []float64, in []*tensor.Dense) error {
			dY, w := grF64s(in[0]), grF64s(in[1])
			V, d := in[1].Shape()[0], in[1].Shape()[1]
			grGemm(false, false, len(dY)/V, d, V, 1, dY, V, w, d, 0, dx, d)
			return nil
		}
		dx, err := G.ApplyOp(xo, dy, ins[1])
		if err != nil {
			return nil, err
		}
		// dwte = dyᵀ·x [V,d]
		wo := grNewKop("TiedLogitsFullGradW", []int{2, 2}, 2)
		wo.shape = func(s []tensor.Shape) (tensor.Shape, error) { return tensor.Shape{s[0][1], s[1][1]}, nil }
		wo.fwd = func(dw []float64, in []*tensor.Dense) error {
			dY, x := grF64s(in[0]), grF64s(in[1])
			V, d := in[0].Shape()[1], in[1].Shape()[1]
			grGemm(true, false, V, d, len(dY)/V, 1, dY, V, x, d, 0, dw, d)
			return nil
		}
		dW, err := G.ApplyOp(wo, dy, ins[0])
		if err != nil {
			return nil, err
		}
		return G.Nodes{dx, dW}, nil
	}
	return G.ApplyOp(o, x, wte)
}

// ---------- mean next-token negative log-likelihood ----------

// grScalarKop is a grKop whose output is a scalar (*G.F64) and whose inputs may include scalars
// (the cost's incoming gradient is a *G.F64): scalar inputs reach the kernel as 1-element
// vectors.
type grScalarKop struct{ *grKop }

func (o grScalarKop) Do(vals ...G.Value) (G.Value, error) {
	conv := make([]G.Value, len(vals))
	for i, v := range vals {
		switch x := v.(type) {
		case *G.F64:
			conv[i] = tensor.New(tensor.WithShape(1), tensor.WithBacking([]float64{float64(*x)}))
		case *tensor.Dense:
			if x.Shape().IsScalar() {
				conv[i] = tensor.New(tensor.WithShape(1), tensor.WithBacking([]float64{x.Data().(float64)}))
			} else {
				conv[i] = x
			}
		default:
			return nil, fmt.Errorf("%s: input %d is %T", o.name, i, v)
		}
	}
	if o.outDims != 0 {
		return o.grKop.Do(conv...)
	}
	ins := make([]*tensor.Dense, len(conv))
	for i, v := range conv {
		d := v.(*tensor.Dense)
		if d.Dtype() != tensor.Float64 {
			return nil, fmt.Errorf("%s: input %d has dtype %v, want float64", o.name, i, d.Dtype())
		}
		if d.IsMaterializable() {
			d = d.Materialize().(*tensor.Dense)
		}
		ins[i] = d
	}
	var out [1]float64
	if err := o.fwd(out[:], ins); err != nil {
		return nil, fmt.Errorf("%s: %w", o.name, err)
	}
	return G.NewF64(out[0]), nil
}

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
		g := grNewKop("LMLossGrad", []int{2, 1, 1, 0}, 2)
		g.shape = func(s []tensor.Shape) (tensor.Shape, error) { return s[0].Clone(), nil }
		g.fwd = func(dl []float64, in []*tensor.Dense) error {
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
					row, l := lg[n*V:(n+1)*V], lse[n]
					for j, v := range row {
						d[j] = c * math.Exp(v-l)
					}
					d[int(tg[n])] -= c
				}
			})
			return nil
		}
		dx, err := G.ApplyOp(grScalarKop{g}, ins[0], ins[1], ins[2], dy)
		return G.Nodes{dx, nil, nil}, err
	}
	return G.ApplyOp(grScalarKop{o}, logits, tgt, w)
}

// ---------- packed rows: several documents per row ----------

// grEmbedPosOp is grEmbedOp with explicit positions: x[n] = wte[tok[n]] + wpe[pos[n]] (pos is a
// float64 vector of N position ids, restarting at 0 at every document of a packed row).
// Differentiable in wte and wpe.
func grEmbedPosOp(wte, wpe, tok, pos *G.Node) (*G.Node, error) {
	o := grNewKop("EmbedPos", []int{2, 2, 1, 1}, 2)
	o.shape = func(s []tensor.Shape) (tensor.Shape, error) {
		if len(s[0]) != 2 || len(s[1]) != 2 || s[0][1] != s[1][1] || len(s[2]) != 1 || !s[2].Eq(s[3]) {
			return nil, fmt.Errorf("EmbedPos: bad shapes wte %v wpe %v tok %v pos %v", s[0], s[1], s[2], s[3])
		}
		return tensor.Shape{s[2][0], s[0][1]}, nil
	}
	o.fwd = func(out []float64, in []*tensor.Dense) error {
		wte, wpe, tok, pos := grF64s(in[0]), grF64s(in[1]), grF64s(in[2]), grF64s(in[3])
		V, d, P := in[0].Shape()[0], in[0].Shape()[1], in[1].Shape()[0]
		for n, tf := range tok {
			t, p := int(tf), int(pos[n])
			if t < 0 || t >= V || float64(t) != tf {
				return fmt.Errorf("token %v at %d outside [0,%d)", tf, n, V)
			}
			if p < 0 || p >= P || float64(p) != pos[n] {
				return fmt.Errorf("position %v at %d outside [0,%d)", pos[n], n, P)
			}
			row, e, q := out[n*d:(n+1)*d], wte[t*d:(t+1)*d], wpe[p*d:(p+1)*d]
			for j := range row {
				row[j] = e[j] + q[j]
			}
		}
		return nil
	}
	o.diff = []bool{true, true, false, false}
	o.sym = func(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
		// both are scatters of dy by an index vector (token ids, position ids)
		dwte, err := grEmbedGradOp(grad, in[2], in[0], 1, false)
		if err != nil {
			return nil, err
		}
		dwpe, err := grEmbedGradOp(grad, in[3], in[1], 1, false)
		if err != nil {
			return nil, err
		}
		return G.Nodes{dwte, dwpe, nil, nil}, nil
	}
	return G.ApplyOp(o, wte, wpe, tok, pos)
}

// grSegAttentionOp is grAttentionOp for packed rows: start [N] holds, for every token, the
// row-local index of the first token of its document, and token i attends to the tokens
// [start[i], i] of its row only (the causal mask restricted to the document). With start = 0
// everywhere it is grAttentionOp.
func grSegAttentionOp(qkv, start *G.Node, batch, T, d, heads int) (*G.Node, error) {
	dh := d / heads
	scale := 1 / math.Sqrt(float64(dh))
	BH := batch * heads
	probs := make([]float64, BH*T*T) // private cache
	o := grNewKop("SegmentedCausalSelfAttention", []int{2, 1}, 2)
	o.shape = func(s []tensor.Shape) (tensor.Shape, error) {
		if err := grShapeIs("attention qkv", s[0], batch*T, 3*d); err != nil {
			return nil, err
		}
		return tensor.Shape{batch * T, d}, grShapeIs("attention starts", s[1], batch*T)
	}
	o.fwd = func(y []float64, in []*tensor.Dense) error {
		qkv, st := grF64s(in[0]), grF64s(in[1])
		for n, s := range st {
			if i := n % T; s < 0 || int(s) > i || float64(int(s)) != s {
				return fmt.Errorf("segment start %v of row position %d", s, i)
			}
		}
		ld := 3 * d
		grParallelFor(BH, 1, func(_, lo, hi int) {
			for bh := lo; bh < hi; bh++ {
				b, h := bh/heads, bh%heads
				base := b * T * ld
				q := qkv[base+h*dh:]
				k := qkv[base+d+h*dh:]
				v := qkv[base+2*d+h*dh:]
				P := probs[bh*T*T : (bh+1)*T*T]
				grGemm(false, true, T, T, dh, scale, q, ld, k, ld, 0, P, T)
				for i := 0; i < T; i++ {
					row := P[i*T : (i+1)*T]
					s0 := int(st[b*T+i])
					m := row[s0]
					for j := s0 + 1; j <= i; j++ {
						if row[j] > m {
							m = row[j]
						}
					}
					var z float64
					for j := s0; j <= i; j++ {
						e := math.Exp(row[j] - m)
						row[j] = e
						z += e
					}
					inv := 1 / z
					for j := s0; j <= i; j++ {
						row[j] *= inv
					}
					clear(row[:s0])
					clear(row[i+1:])
				}
				grGemm(false, false, T, dh, T, 1, P, T, v, ld, 0, y[b*T*d+h*dh:], d)
			}
		})
		return nil
	}
	o.diff = []bool{true, false}
	o.sym = func(ins G.Nodes, _, dy *G.Node) (G.Nodes, error) {
		g := grNewKop("SegmentedCausalSelfAttentionGrad", []int{2, 1, 2}, 2)
		scratch := make([][]float64, grMaxWorkers())
		g.shape = func(s []tensor.Shape) (tensor.Shape, error) { return s[0].Clone(), nil }
		g.fwd = func(dqkv []float64, in []*tensor.Dense) error {
			qkv, st, dY := grF64s(in[0]), grF64s(in[1]), grF64s(in[2])
			ld := 3 * d
			grParallelFor(BH, 1, func(w, lo, hi int) {
				if len(scratch[w]) != T*T {
					scratch[w] = make([]float64, T*T)
				}
				dP := scratch[w]
				for bh := lo; bh < hi; bh++ {
					b, h := bh/heads, bh%heads
					base := b * T * ld
					q := qkv[base+h*dh:]
					k := qkv[base+d+h*dh:]
					v := qkv[base+2*d+h*dh:]
					dq := dqkv[base+h*dh:]
					dk := dqkv[base+d+h*dh:]
					dv := dqkv[base+2*d+h*dh:]
					dy := dY[b*T*d+h*dh:]
					P := probs[bh*T*T : (bh+1)*T*T]
					grGemm(true, false, T, dh, T, 1, P, T, dy, d, 0, dv, ld)
					grGemm(false, true, T, T, dh, 1, dy, d, v, ld, 0, dP, T)
					for i := 0; i < T; i++ {
						pr, dr := P[i*T:(i+1)*T], dP[i*T:(i+1)*T]
						s0 := int(st[b*T+i])
						var s float64
						for j := s0; j <= i; j++ {
							s += pr[j] * dr[j]
						}
						for j := s0; j <= i; j++ {
							dr[j] = scale * pr[j] * (dr[j] - s)
						}
						clear(dr[:s0])
						clear(dr[i+1:])
					}
					grGemm(false, false, T, dh, T, 1, dP, T, k, ld, 0, dq, ld)
					grGemm(true, false, T, dh, T, 1, dP, T, q, ld, 0, dk, ld)
				}
			})
			return nil
		}
		dx, err := G.ApplyOp(g, ins[0], ins[1], dy)
		return G.Nodes{dx, nil}, err
	}
	return G.ApplyOp(o, qkv, start)
}
