package model

// Custom gorgonia ops for the training graph.
//
// Every layer of the decoder is one fused gorgonia Op with a hand-written backward (its SymDiff
// emits gradient nodes that are themselves ops of this file). Each op owns its output buffer and
// reuses it on every run of the tape machine, so a training step allocates almost nothing after
// the first one; gorgonia still owns the graph, the chain rule, gradient accumulation (ReduceAdd
// on the residual stream) and the execution order. The gradients are verified against central
// finite differences in gradcheck_test.go.
//
// Rules the kernels follow so that buffer reuse is safe under gorgonia's register allocator:
//   - an op writes every element of its output on every call;
//   - a backward op never reads a forward op's *output* through op state (only through its graph
//     inputs): gorgonia may overwrite a dead register in place (unsafe Add), and that register
//     can be an op-owned buffer. Private caches (attention probabilities, x·A) are never exposed
//     as outputs, so nothing but their owner writes them.

import (
	"fmt"
	"hash"
	"hash/fnv"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/chewxy/hm"
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

var grOpSeq atomic.Int64

// grKop is a generic float64 gorgonia op backed by a Go kernel.
type grKop struct {
	name    string
	id      int64
	inDims  []int // number of dimensions of each input (0 = scalar)
	outDims int
	shape   func(in []tensor.Shape) (tensor.Shape, error)
	// fwd writes every element of out (row-major, shape from shape()).
	fwd func(out []float64, in []*tensor.Dense) error
	// diff marks the inputs with a gradient; sym builds the gradient nodes (nil for the others).
	diff []bool
	sym  func(in G.Nodes, out, grad *G.Node) (G.Nodes, error)

	buf *tensor.Dense
}

func grNewKop(name string, inDims []int, outDims int) *grKop {
	return &grKop{name: name, id: grOpSeq.Add(1), inDims: inDims, outDims: outDims, diff: make([]bool, len(inDims))}
}

func grF64Type(dims int) hm.Type {
	if dims == 0 {
		return tensor.Float64
	}
	return G.TensorType{Dims: dims, Of: tensor.Float64}
}

func (o *grKop) Arity() int { return len(o.inDims) }
func (o *grKop) Type() hm.Type {
	ts := make([]hm.Type, 0, len(o.inDims)+1)
	for _, d := range o.inDims {
		ts = append(ts, grF64Type(d))
	}
	ts = append(ts, grF64Type(o.outDims))
	return hm.NewFnType(ts...)
}
func (o *grKop) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	shapes := make([]tensor.Shape, len(ds))
	for i, d := range ds {
		s, ok := d.(tensor.Shape)
		if !ok {
			return nil, fmt.Errorf("%s: input %d has no shape", o.name, i)
		}
		shapes[i] = s
	}
	return o.shape(shapes)
}
func (o *grKop) ReturnsPtr() bool      { return false }
func (o *grKop) CallsExtern() bool     { return false }
func (o *grKop) OverwritesInput() int  { return -1 }
func (o *grKop) WriteHash(h hash.Hash) { fmt.Fprintf(h, "bpo.%s#%d", o.name, o.id) }
func (o *grKop) Hashcode() uint32 {
	h := fnv.New32a()
	o.WriteHash(h)
	return h.Sum32()
}
func (o *grKop) String() string { return o.name }

func (o *grKop) DiffWRT(n int) []bool { return append([]bool(nil), o.diff...) }

func (o *grKop) SymDiff(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
	if o.sym == nil {
		return nil, fmt.Errorf("%s is not differentiable", o.name)
	}
	return o.sym(in, out, grad)
}

func (o *grKop) Do(vals ...G.Value) (G.Value, error) {
	if len(vals) != len(o.inDims) {
		return nil, fmt.Errorf("%s: want %d inputs, got %d", o.name, len(o.inDims), len(vals))
	}
	ins := make([]*tensor.Dense, len(vals))
	shapes := make([]tensor.Shape, len(vals))
	for i, v := range vals {
		d, ok := v.(*tensor.Dense)
		if !ok {
			return nil, fmt.Errorf("%s: input %d is %T, want *tensor.Dense", o.name, i, v)
		}
		if d.Dtype() != tensor.Float64 {
			return nil, fmt.Errorf("%s: input %d has dtype %v, want float64", o.name, i, d.Dtype())
		}
		if d.IsMaterializable() {
			d = d.Materialize().(*tensor.Dense)
		}
		ins[i] = d
		shapes[i] = d.Shape()
	}
	s, err := o.shape(shapes)
	if err != nil {
		return nil, err
	}
	if o.buf == nil || o.buf.Size() != s.TotalSize() {
		o.buf = tensor.New(tensor.WithShape(s.Clone()...), tensor.Of(tensor.Float64))
	} else if !o.buf.Shape().Eq(s) {
		// somebody (a gorgonia Reshape) changed our buffer's header: restore it
		if err := o.buf.Reshape(s...); err != nil {
			return nil, err
		}
	}
	if err := o.fwd(o.buf.Data().([]float64), ins); err != nil {
		return nil, fmt.Errorf("%s: %w", o.name, err)
	}
	return o.buf, nil
}

// grScalarKop is a grKop whose output may be a scalar (*G.F64) and whose inputs may include
// scalars (the cost's incoming gradient is a *G.F64): scalar inputs reach the kernel as 1-element
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

func grF64s(t *tensor.Dense) []float64 { return t.Data().([]float64) }

func grShapeIs(name string, s tensor.Shape, dims ...int) error {
	if len(s) != len(dims) {
		return fmt.Errorf("%s: shape %v, want %v", name, s, dims)
	}
	for i, d := range dims {
		if d >= 0 && s[i] != d {
			return fmt.Errorf("%s: shape %v, want %v", name, s, dims)
		}
	}
	return nil
}

// ---------- small helpers ----------

// grParallelFor runs fn over [0,n) split into at most GOMAXPROCS contiguous chunks; worker is the
// chunk index (for per-worker scratch). Small n runs inline.
func grParallelFor(n, minPerWorker int, fn func(worker, lo, hi int)) {
	w := runtime.GOMAXPROCS(0)
	if minPerWorker < 1 {
		minPerWorker = 1
	}
	if m := n / minPerWorker; m < w {
		w = m
	}
	if w <= 1 {
		fn(0, 0, n)
		return
	}
	var wg sync.WaitGroup
	chunk := (n + w - 1) / w
	for k := 0; k < w; k++ {
		lo, hi := k*chunk, (k+1)*chunk
		if hi > n {
			hi = n
		}
		if lo >= hi {
			break
		}
		wg.Add(1)
		go func(k, lo, hi int) {
			defer wg.Done()
			fn(k, lo, hi)
		}(k, lo, hi)
	}
	wg.Wait()
}

func grMaxWorkers() int { return runtime.GOMAXPROCS(0) }

func grGeneral(rows, cols, stride int, data []float64) blas64.General {
	return blas64.General{Rows: rows, Cols: cols, Stride: stride, Data: data}
}

// grGemm computes c = alpha·op(a)·op(b) + beta·c on dense row-major matrices.
func grGemm(tA, tB bool, m, n, k int, alpha float64, a []float64, lda int, b []float64, ldb int, beta float64, c []float64, ldc int) {
	ta, tb := blas.NoTrans, blas.NoTrans
	ar, ac := m, k
	if tA {
		ta, ar, ac = blas.Trans, k, m
	}
	br, bc := k, n
	if tB {
		tb, br, bc = blas.Trans, n, k
	}
	blas64.Gemm(ta, tb, alpha, grGeneral(ar, ac, lda, a), grGeneral(br, bc, ldb, b), beta, grGeneral(m, n, ldc, c))
}

// grInputGradOp builds the gradient of an op with nIn inputs of which only the first is
// differentiable: one kernel over args (of inDims dimensions) whose output is shaped like args[0].
// A scalar argument (the cost's gradient) needs grScalarKop's Do.
func grInputGradOp(name string, nIn int, inDims []int, fwd func(dx []float64, in []*tensor.Dense) error, args ...*G.Node) (G.Nodes, error) {
	g := grNewKop(name, inDims, inDims[0])
	g.shape = func(s []tensor.Shape) (tensor.Shape, error) { return s[0].Clone(), nil }
	g.fwd = fwd
	var op G.Op = g
	if slices.Contains(inDims, 0) {
		op = grScalarKop{g}
	}
	dx, err := G.ApplyOp(op, args...)
	grads := make(G.Nodes, nIn)
	grads[0] = dx
	return grads, err
}

// ---------- embedding: x[n] = wte[tok[n]] + wpe[position of n] ----------

// grEmbedAtOp looks tokens up in wte [V,d] and adds position embeddings wpe [P,d]; tok is a
// float64 vector of N = B*T token ids. The position of row n is pos[n] when pos is not nil (packed
// rows, positions restarting at 0 at every document), else n mod T. Differentiable in wte and wpe.
func grEmbedAtOp(wte, wpe, tok, pos *G.Node, T int) (*G.Node, error) {
	name, dims, args := "Embed", []int{2, 2, 1}, G.Nodes{wte, wpe, tok}
	if pos != nil {
		name, dims, args = "EmbedPos", []int{2, 2, 1, 1}, append(args, pos)
	}
	o := grNewKop(name, dims, 2)
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
	o.fwd = func(out []float64, in []*tensor.Dense) error {
		wte, wpe, tok := grF64s(in[0]), grF64s(in[1]), grF64s(in[2])
		V, d, P := in[0].Shape()[0], in[0].Shape()[1], in[1].Shape()[0]
		var ps []float64
		if pos != nil {
			ps = grF64s(in[3])
		}
		for n, tf := range tok {
			t := int(tf)
			if t < 0 || t >= V || float64(t) != tf {
				return fmt.Errorf("token %v at %d outside [0,%d)", tf, n, V)
			}
			var p int
			if ps == nil {
				p = n % T
			} else if p = int(ps[n]); p < 0 || p >= P || float64(p) != ps[n] {
				return fmt.Errorf("position %v at %d outside [0,%d)", ps[n], n, P)
			}
			row, e, q := out[n*d:(n+1)*d], wte[t*d:(t+1)*d], wpe[p*d:(p+1)*d]
			for j := range row {
				row[j] = e[j] + q[j]
			}
		}
		return nil
	}
	o.diff = make([]bool, len(dims))
	o.diff[0], o.diff[1] = true, true
	o.sym = func(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
		grads := make(G.Nodes, len(in))
		var err error
		if grads[0], err = grEmbedGradOp(grad, in[2], in[0], T, false); err != nil {
			return nil, err
		}
		if pos != nil { // a scatter by the position ids
			grads[1], err = grEmbedGradOp(grad, in[3], in[1], T, false)
		} else {
			grads[1], err = grEmbedGradOp(grad, in[2], in[1], T, true)
		}
		if err != nil {
			return nil, err
		}
		return grads, nil
	}
	return G.ApplyOp(o, args...)
}

// grEmbedGradOp scatters dy [N,d] into a table shaped like like: by the index vector tok
// (positions=false) or by position n mod T (positions=true).
func grEmbedGradOp(dy, tok, like *G.Node, T int, positions bool) (*G.Node, error) {
	o := grNewKop("EmbedGrad", []int{2, 1, 2}, 2)
	o.shape = func(s []tensor.Shape) (tensor.Shape, error) { return s[2].Clone(), nil }
	o.fwd = func(out []float64, in []*tensor.Dense) error {
		dy, tok := grF64s(in[0]), grF64s(in[1])
		d := in[2].Shape()[1]
		clear(out)
		for n, tf := range tok {
			r := int(tf)
			if positions {
				r = n % T
			}
			row, g := out[r*d:(r+1)*d], dy[n*d:(n+1)*d]
			for j := range row {
				row[j] += g[j]
			}
		}
		return nil
	}
	return G.ApplyOp(o, dy, tok, like)
}

// ---------- LayerNorm over the last axis, frozen gain/bias ----------

func grLayerNormOp(x *G.Node, gain, bias []float64, eps float64) (*G.Node, error) {
	d := len(gain)
	o := grNewKop("LayerNorm", []int{2}, 2)
	o.shape = func(s []tensor.Shape) (tensor.Shape, error) {
		return s[0].Clone(), grShapeIs("LayerNorm x", s[0], -1, d)
	}
	o.fwd = func(out []float64, in []*tensor.Dense) error {
		grLayerNormRows(out, grF64s(in[0]), gain, bias, eps, nil, nil)
		return nil
	}
	o.diff = []bool{true}
	o.sym = func(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
		return grInputGradOp("LayerNormGrad", 1, []int{2, 2}, func(dx []float64, v []*tensor.Dense) error {
			grLayerNormGradRows(dx, grF64s(v[0]), grF64s(v[1]), gain, eps, nil, nil)
			return nil
		}, in[0], grad)
	}
	return G.ApplyOp(o, x)
}

// grLayerNormRows writes y = (x−mean)·rstd·g + b over the rows of x [rows,d]; with mean and rstd
// not nil it also keeps each row's statistics there for the backward.
func grLayerNormRows(y, x, g, b []float64, eps float64, mean, rstd []float64) {
	d := len(g)
	grParallelFor(len(x)/d, 256, func(_, lo, hi int) {
		for r := lo; r < hi; r++ {
			xr, yr := x[r*d:(r+1)*d], y[r*d:(r+1)*d]
			mu, rs := grMeanRstd(xr, eps)
			if mean != nil {
				mean[r], rstd[r] = mu, rs
			}
			for j, v := range xr {
				yr[j] = (v-mu)*rs*g[j] + b[j]
			}
		}
	})
}

// grLayerNormGradRows writes dx = rstd·(g∘dy − mean(g∘dy) − x̂·mean(g∘dy∘x̂)) per row, with the
// statistics kept by grLayerNormRows or, when mean is nil, recomputed.
func grLayerNormGradRows(dx, x, dy, g []float64, eps float64, mean, rstd []float64) {
	d := len(g)
	grParallelFor(len(x)/d, 256, func(_, lo, hi int) {
		for r := lo; r < hi; r++ {
			xr, gr, dr := x[r*d:(r+1)*d], dy[r*d:(r+1)*d], dx[r*d:(r+1)*d]
			var mu, rs float64
			if mean != nil {
				mu, rs = mean[r], rstd[r]
			} else {
				mu, rs = grMeanRstd(xr, eps)
			}
			var m1, m2 float64
			for j, v := range xr {
				gh := gr[j] * g[j]
				m1 += gh
				m2 += gh * (v - mu) * rs
			}
			m1 /= float64(d)
			m2 /= float64(d)
			for j, v := range xr {
				dr[j] = rs * (gr[j]*g[j] - m1 - (v-mu)*rs*m2)
			}
		}
	})
}

func grMeanRstd(x []float64, eps float64) (mean, rstd float64) {
	for _, v := range x {
		mean += v
	}
	mean /= float64(len(x))
	var vr float64
	for _, v := range x {
		vr += (v - mean) * (v - mean)
	}
	vr /= float64(len(x))
	return mean, 1 / math.Sqrt(vr+eps)
}

// ---------- GELU, tanh approximation ("gelu_new") ----------

const grGeluC = 0.7978845608028654 // sqrt(2/pi)

// grGeluOp applies gelu_new elementwise. The tanh values are cached privately for the backward.
func grGeluOp(x *G.Node) (*G.Node, error) {
	o := grNewKop("GeluNew", []int{2}, 2)
	var th []float64 // private cache: tanh(c·(x + 0.044715·x³))
	o.shape = func(s []tensor.Shape) (tensor.Shape, error) { return s[0].Clone(), nil }
	o.fwd = func(out []float64, in []*tensor.Dense) error {
		x := grF64s(in[0])
		if cap(th) < len(x) {
			th = make([]float64, len(x))
		}
		th = th[:len(x)]
		grParallelFor(len(x), 1<<14, func(_, lo, hi int) {
			for i := lo; i < hi; i++ {
				v := x[i]
				t := math.Tanh(grGeluC * (v + 0.044715*v*v*v))
				th[i] = t
				out[i] = 0.5 * v * (1 + t)
			}
		})
		return nil
	}
	o.diff = []bool{true}
	o.sym = func(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
		return grInputGradOp("GeluNewGrad", 1, []int{2, 2}, func(dx []float64, in []*tensor.Dense) error {
			x, dy := grF64s(in[0]), grF64s(in[1])
			if len(th) != len(x) {
				return fmt.Errorf("GeluNewGrad before its forward")
			}
			grParallelFor(len(x), 1<<14, func(_, lo, hi int) {
				for i := lo; i < hi; i++ {
					v, t := x[i], th[i]
					dth := (1 - t*t) * grGeluC * (1 + 3*0.044715*v*v)
					dx[i] = dy[i] * (0.5*(1+t) + 0.5*v*dth)
				}
			})
			return nil
		}, in[0], grad)
	}
	return G.ApplyOp(o, x)
}

// ---------- Conv1D with LoRA: y = x·W + b + s·(x·A)·B; W, b frozen ----------

// grLoraParams holds the frozen base projection and the adapter scale, read at run time.
type grLoraParams struct {
	W     []float64 // [in,out]
	Bias  []float64 // [out]
	In    int
	Out   int
	Rank  int
	Scale *float64 // alpha/r, set per step; 0 disables the adapter path (A, B are then not read)
}

// grLoraLinearOp computes x [N,in] -> [N,out]; differentiable in x, A [in,r] and B [r,out].
func grLoraLinearOp(x, A, B *G.Node, p *grLoraParams) (*G.Node, error) {
	in, out, r := p.In, p.Out, p.Rank
	o := grNewKop("LoRALinear", []int{2, 2, 2}, 2)
	var xa []float64 // private cache of x·A [N,r], reused by the dB op
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
	o.fwd = func(y []float64, ins []*tensor.Dense) error {
		x, a, b := grF64s(ins[0]), grF64s(ins[1]), grF64s(ins[2])
		n := len(x) / in
		grAffine(y, x, p.W, p.Bias, in, out, false)
		if s := *p.Scale; s != 0 {
			if cap(xa) < n*r {
				xa = make([]float64, n*r)
			}
			xa = xa[:n*r]
			grGemm(false, false, n, r, in, 1, x, in, a, r, 0, xa, r)
			grGemm(false, false, n, out, r, s, xa, r, b, out, 1, y, out)
		}
		return nil
	}
	o.diff = []bool{true, true, true}
	o.sym = func(ins G.Nodes, _, dy *G.Node) (G.Nodes, error) {
		x, A, B := ins[0], ins[1], ins[2]
		// u = s·dy·Bᵀ [N,r], shared by dx and dA
		uo := grNewKop("LoRAGradU", []int{2, 2}, 2)
		uo.shape = func(s []tensor.Shape) (tensor.Shape, error) { return tensor.Shape{s[0][0], r}, nil }
		uo.fwd = func(u []float64, v []*tensor.Dense) error {
			dy, b := grF64s(v[0]), grF64s(v[1])
			n := len(dy) / out
			grGemm(false, true, n, r, out, *p.Scale, dy, out, b, out, 0, u, r)
			return nil
		}
		u, err := G.ApplyOp(uo, dy, B)
		if err != nil {
			return nil, err
		}
		// dx = dy·Wᵀ + u·Aᵀ
		xo := grNewKop("LoRAGradX", []int{2, 2, 2}, 2)
		xo.shape = func(s []tensor.Shape) (tensor.Shape, error) { return tensor.Shape{s[0][0], in}, nil }
		xo.fwd = func(dx []float64, v []*tensor.Dense) error {
			dy, u, a := grF64s(v[0]), grF64s(v[1]), grF64s(v[2])
			n := len(dy) / out
			grAffineGradX(dx, dy, p.W, in, out, false)
			if *p.Scale != 0 {
				grGemm(false, true, n, in, r, 1, u, r, a, r, 1, dx, in)
			}
			return nil
		}
		dx, err := G.ApplyOp(xo, dy, u, A)
		if err != nil {
			return nil, err
		}
		// dA = xᵀ·u
		ao := grNewKop("LoRAGradA", []int{2, 2}, 2)
		ao.shape = func(s []tensor.Shape) (tensor.Shape, error) { return tensor.Shape{in, r}, nil }
		ao.fwd = func(da []float64, v []*tensor.Dense) error {
			x, u := grF64s(v[0]), grF64s(v[1])
			n := len(x) / in
			grGemm(true, false, in, r, n, 1, x, in, u, r, 0, da, r)
			return nil
		}
		dA, err := G.ApplyOp(ao, x, u)
		if err != nil {
			return nil, err
		}
		// dB = s·(x·A)ᵀ·dy, x·A from the forward cache (it depends on dy only for ordering)
		bo := grNewKop("LoRAGradB", []int{2}, 2)
		bo.shape = func(s []tensor.Shape) (tensor.Shape, error) { return tensor.Shape{r, out}, nil }
		bo.fwd = func(db []float64, v []*tensor.Dense) error {
			dy := grF64s(v[0])
			n := len(dy) / out
			s := *p.Scale
			if s == 0 || len(xa) != n*r {
				clear(db)
				return nil
			}
			grGemm(true, false, r, out, n, s, xa, r, dy, out, 0, db, out)
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

// ---------- causal multi-head self-attention on qkv [N,3d] -> [N,d] ----------

// grCausalAttentionOp splits qkv (q|k|v, heads contiguous inside each) into B·H heads of [T,dh],
// computes softmax(q·kᵀ/√dh + mask)·v per head and merges the heads back to [N,d]. Token i attends
// to the tokens [start[i], i] of its row: start [N] holds the row-local document starts of packed
// rows, nil means 0 everywhere (plain causal). The mask is additive -Inf outside that range,
// applied by never reading those entries (their probabilities are exactly 0). Probabilities are
// cached privately for the backward.
func grCausalAttentionOp(qkv, start *G.Node, batch, T, d, heads int) (*G.Node, error) {
	dh := d / heads
	scale := 1 / math.Sqrt(float64(dh))
	BH := batch * heads
	probs := make([]float64, BH*T*T) // private cache
	name, dims, args := "CausalSelfAttention", []int{2}, G.Nodes{qkv}
	if start != nil {
		name, dims, args = "SegmentedCausalSelfAttention", []int{2, 1}, append(args, start)
	}
	o := grNewKop(name, dims, 2)
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
	o.fwd = func(y []float64, in []*tensor.Dense) error {
		qkv := grF64s(in[0])
		var st []float64
		if start != nil {
			st = grF64s(in[1])
			for n, s := range st {
				if i := n % T; s < 0 || int(s) > i || float64(int(s)) != s {
					return fmt.Errorf("segment start %v of row position %d", s, i)
				}
			}
		}
		ld := 3 * d
		grParallelFor(BH, 1, func(_, lo, hi int) {
			for bh := lo; bh < hi; bh++ {
				b, h := bh/heads, bh%heads
				q, k, v := grHeadQKV(qkv, b*T*ld, d, h*dh)
				P := probs[bh*T*T : (bh+1)*T*T]
				grGemm(false, true, T, T, dh, scale, q, ld, k, ld, 0, P, T)
				for i := 0; i < T; i++ {
					row := P[i*T : (i+1)*T]
					s0 := grSegStart(st, b*T+i)
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
	o.diff = make([]bool, len(dims))
	o.diff[0] = true
	o.sym = func(ins G.Nodes, _, dy *G.Node) (G.Nodes, error) {
		scratch := make([][]float64, grMaxWorkers())
		return grInputGradOp(name+"Grad", len(ins), append(dims[:len(dims):len(dims)], 2), func(dqkv []float64, in []*tensor.Dense) error {
			qkv, dY := grF64s(in[0]), grF64s(in[len(in)-1])
			var st []float64
			if start != nil {
				st = grF64s(in[1])
			}
			ld := 3 * d
			grParallelFor(BH, 1, func(w, lo, hi int) {
				if len(scratch[w]) != T*T {
					scratch[w] = make([]float64, T*T)
				}
				dP := scratch[w]
				for bh := lo; bh < hi; bh++ {
					b, h := bh/heads, bh%heads
					q, k, v := grHeadQKV(qkv, b*T*ld, d, h*dh)
					dq, dk, dv := grHeadQKV(dqkv, b*T*ld, d, h*dh)
					dy := dY[b*T*d+h*dh:]
					P := probs[bh*T*T : (bh+1)*T*T]
					// dV = Pᵀ·dY ; dP = dY·Vᵀ
					grGemm(true, false, T, dh, T, 1, P, T, dy, d, 0, dv, ld)
					grGemm(false, true, T, T, dh, 1, dy, d, v, ld, 0, dP, T)
					// dS = scale · P ∘ (dP − rowsum(P∘dP))
					for i := 0; i < T; i++ {
						pr, dr := P[i*T:(i+1)*T], dP[i*T:(i+1)*T]
						s0 := grSegStart(st, b*T+i)
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
					// dQ = dS·K ; dK = dSᵀ·Q
					grGemm(false, false, T, dh, T, 1, dP, T, k, ld, 0, dq, ld)
					grGemm(true, false, T, dh, T, 1, dP, T, q, ld, 0, dk, ld)
				}
			})
			return nil
		}, append(ins[:len(ins):len(ins)], dy)...)
	}
	return G.ApplyOp(o, args...)
}

// grHeadQKV returns the q, k and v columns of head offset off (h·dh) in the rows of one sequence
// (from base) of a [N,3d] buffer.
func grHeadQKV(buf []float64, base, d, off int) (q, k, v []float64) {
	return buf[base+off:], buf[base+d+off:], buf[base+2*d+off:]
}

// grSegStart is the first key position row n attends to: its document start, 0 without starts.
func grSegStart(st []float64, n int) int {
	if st == nil {
		return 0
	}
	return int(st[n])
}

// ---------- dense projections: y = x·W + b, and the tied output projection x·wteᵀ ----------

// grAffine writes y = x·op(W) + bias for x [n,in] and op(W) [in,out]; W is [out,in] when transW
// (wte in the tied projection), else [in,out]. A nil bias adds nothing.
func grAffine(y, x, w, bias []float64, in, out int, transW bool) {
	n := len(x) / in
	beta := 0.0
	if bias != nil {
		for i := 0; i < n; i++ {
			copy(y[i*out:(i+1)*out], bias)
		}
		beta = 1
	}
	grGemm(false, transW, n, out, in, 1, x, in, w, grLdW(in, out, transW), beta, y, out)
}

// grAffineGradX writes dx = dy·op(W)ᵀ [n,in] (layout of W as for grAffine).
func grAffineGradX(dx, dy, w []float64, in, out int, transW bool) {
	grGemm(false, !transW, len(dy)/out, in, out, 1, dy, out, w, grLdW(in, out, transW), 0, dx, in)
}

// grAffineGradW writes dW: xᵀ·dy [in,out], or dyᵀ·x [out,in] when transW.
func grAffineGradW(dw, x, dy []float64, in, out int, transW bool) {
	if transW {
		grGemm(true, false, out, in, len(dy)/out, 1, dy, out, x, in, 0, dw, in)
		return
	}
	grGemm(true, false, in, out, len(x)/in, 1, x, in, dy, out, 0, dw, out)
}

// grLdW is the row stride of W in grAffine.
func grLdW(in, out int, transW bool) int {
	if transW {
		return in
	}
	return out
}

// grTiedLogitsOp computes x [N,d] · wteᵀ [d,V]; differentiable in x only (wte is frozen).
func grTiedLogitsOp(x, wte *G.Node) (*G.Node, error) {
	return grDenseOp("TiedLogits", x, wte, nil, true, false)
}

// grDenseOp computes y = x·W + b for x [N,in] and W [in,out], or y = x·Wᵀ for W [out,in] when
// transW; b may be nil. Differentiable in x, and in W and b when trainW (else W is frozen).
func grDenseOp(name string, x, W, b *G.Node, transW, trainW bool) (*G.Node, error) {
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
	o := grNewKop(name, dims, 2)
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
	o.fwd = func(y []float64, v []*tensor.Dense) error {
		var bias []float64
		if b != nil {
			bias = grF64s(v[2])
		}
		in, out := inOut(v[1].Shape())
		grAffine(y, grF64s(v[0]), grF64s(v[1]), bias, in, out, transW)
		return nil
	}
	o.diff = []bool{true, trainW, trainW}[:len(dims)]
	o.sym = func(ins G.Nodes, _, dy *G.Node) (G.Nodes, error) {
		grads := make(G.Nodes, len(ins))
		xo := grNewKop(name+"GradX", []int{2, 2}, 2)
		xo.shape = func(s []tensor.Shape) (tensor.Shape, error) {
			in, _ := inOut(s[1])
			return tensor.Shape{s[0][0], in}, nil
		}
		xo.fwd = func(dx []float64, v []*tensor.Dense) error {
			in, out := inOut(v[1].Shape())
			grAffineGradX(dx, grF64s(v[0]), grF64s(v[1]), in, out, transW)
			return nil
		}
		var err error
		if grads[0], err = G.ApplyOp(xo, dy, ins[1]); err != nil || !trainW {
			return grads, err
		}
		wo := grNewKop(name+"GradW", []int{2, 2}, 2)
		wo.shape = func(s []tensor.Shape) (tensor.Shape, error) {
			if transW {
				return tensor.Shape{s[1][1], s[0][1]}, nil
			}
			return tensor.Shape{s[0][1], s[1][1]}, nil
		}
		wo.fwd = func(dw []float64, v []*tensor.Dense) error {
			grAffineGradW(dw, grF64s(v[0]), grF64s(v[1]), v[0].Shape()[1], v[1].Shape()[1], transW)
			return nil
		}
		if grads[1], err = G.ApplyOp(wo, ins[0], dy); err != nil {
			return nil, err
		}
		if b != nil {
			if grads[2], err = grColSumOp(dy, name+"GradB"); err != nil {
				return nil, err
			}
		}
		return grads, nil
	}
	return G.ApplyOp(o, args...)
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

// ---------- masked log-softmax gather, summed per sequence ----------

// grSeqLogProbOp returns, per sequence b, Σ_t w[b·T+t] · log softmax(logits[b·T+t])[tgt[b·T+t]]
// for logits [N,V], targets tgt [N] and weights w [N] (0/1 response mask already shifted so that
// row n predicts token n+1). Rows with weight 0 are neither computed nor differentiated.
// The log-softmax is the stable max-subtracted form.
func grSeqLogProbOp(logits, tgt, w *G.Node, batch int) (*G.Node, error) {
	o := grNewKop("SeqLogProb", []int{2, 1, 1}, 1)
	o.shape = func(s []tensor.Shape) (tensor.Shape, error) {
		if len(s[0]) != 2 || s[0][0]%batch != 0 || len(s[1]) != 1 || s[1][0] != s[0][0] || len(s[2]) != 1 || s[2][0] != s[0][0] {
			return nil, fmt.Errorf("SeqLogProb: bad shapes %v %v %v", s[0], s[1], s[2])
		}
		return tensor.Shape{batch}, nil
	}
	o.fwd = func(out []float64, in []*tensor.Dense) error {
		lg, tg, wt := grF64s(in[0]), grF64s(in[1]), grF64s(in[2])
		V := in[0].Shape()[1]
		T := len(tg) / batch
		clear(out)
		for n, wn := range wt {
			if wn == 0 {
				continue
			}
			row := lg[n*V : (n+1)*V]
			t := int(tg[n])
			if t < 0 || t >= V {
				return fmt.Errorf("target %v at %d outside [0,%d)", tg[n], n, V)
			}
			out[n/T] += wn * (row[t] - grLogSumExp(row))
		}
		return nil
	}
	o.diff = []bool{true, false, false}
	o.sym = func(ins G.Nodes, _, dy *G.Node) (G.Nodes, error) {
		return grInputGradOp("SeqLogProbGrad", 3, []int{2, 1, 1, 1}, func(dl []float64, in []*tensor.Dense) error {
			lg, tg, wt, gs := grF64s(in[0]), grF64s(in[1]), grF64s(in[2]), grF64s(in[3])
			V := in[0].Shape()[1]
			T := len(tg) / batch
			grParallelFor(len(wt), 64, func(_, lo, hi int) {
				for n := lo; n < hi; n++ {
					d := dl[n*V : (n+1)*V]
					c := wt[n] * gs[n/T]
					if c == 0 {
						clear(d)
						continue
					}
					row := lg[n*V : (n+1)*V]
					// the sum has the sign of a log-prob: −(gradient of the NLL)
					grNLLGradRow(d, row, grLogSumExp(row), int(tg[n]), -c)
				}
			})
			return nil
		}, ins[0], ins[1], ins[2], dy)
	}
	return G.ApplyOp(o, logits, tgt, w)
}

// grNLLGradRow writes d = c·(softmax(row) − onehot(t)), c times the gradient of
// −log softmax(row)[t]; lse is row's log-sum-exp.
func grNLLGradRow(d, row []float64, lse float64, t int, c float64) {
	for j, v := range row {
		d[j] = c * math.Exp(v-lse)
	}
	d[t] -= c
}

func grLogSumExp(row []float64) float64 {
	m := math.Inf(-1)
	for _, v := range row {
		if v > m {
			m = v
		}
	}
	var z float64
	for _, v := range row {
		z += math.Exp(v - m)
	}
	return m + math.Log(z)
}

// ---------- pick a contiguous range of a vector ----------

// grRangeOp returns x[lo:hi] of a vector (gradient scatters back with zeros elsewhere).
func grRangeOp(x *G.Node, lo, hi int) (*G.Node, error) {
	o := grNewKop(fmt.Sprintf("Range[%d:%d]", lo, hi), []int{1}, 1)
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
		return grInputGradOp(fmt.Sprintf("RangeGrad[%d:%d]", lo, hi), 1, []int{1, 1}, func(dx []float64, in []*tensor.Dense) error {
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
	o := grNewKop("PerToken", []int{1, 1}, 1)
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
		return grInputGradOp("PerTokenGrad", 2, []int{1, 1}, func(dx []float64, in []*tensor.Dense) error {
			dy, n := grF64s(in[0]), grF64s(in[1])
			for i := range dx {
				dx[i] = dy[i] / n[i]
			}
			return nil
		}, dy, ins[1])
	}
	return G.ApplyOp(o, x, n)
}
