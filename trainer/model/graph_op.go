package model

// The machinery of the training graph's custom gorgonia ops (one file per layer: graph_op_*.go).
//
// Every layer of the decoder is one fused gorgonia Op whose forward and hand-written backward
// call the layer's kernel in trainer/model/kernels (the same kernels inference runs); its SymDiff
// emits gradient nodes that are themselves ops of this kind. Each op owns its output buffer and
// reuses it on every run of the tape machine, so a training step allocates almost nothing after
// the first one; gorgonia still owns the graph, the chain rule, gradient accumulation (Add on the
// residual stream) and the execution order. The gradients are verified against central finite
// differences in gradcheck_test.go.
//
// Ops are generic in the element type of their output O (float32 or float64: the graph's
// Precision). Activations and weights are in the graph's dtype; the per-call data vectors (token
// ids, targets, 0/1 weights, positions, document starts), the per-sequence log-prob sums, the
// reference log-probs and the loss are float64 in every precision (sums are accumulated in
// float64 anyway, and the loss package works on float64 nodes).
//
// Rules the kernels follow so that buffer reuse is safe under gorgonia's register allocator:
//   - an op writes every element of its output on every call;
//   - a backward op never reads a forward op's *output* through op state (only through its graph
//     inputs): gorgonia may overwrite a dead register in place (unsafe Add), and that register
//     can be an op-owned buffer. Private caches (attention probabilities, x·A, LayerNorm
//     statistics) are never exposed as outputs, so nothing but their owner writes them.

import (
	"fmt"
	"hash"
	"hash/fnv"
	"slices"
	"sync/atomic"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/bpo-dev/bpo/trainer/model/kernels"
)

var grOpSeq atomic.Int64

// grDtype is the gorgonia dtype of F.
func grDtype[F kernels.Float]() tensor.Dtype {
	var z F
	if _, ok := any(z).(float32); ok {
		return tensor.Float32
	}
	return tensor.Float64
}

// grS returns a dense tensor's backing slice as []F.
func grS[F kernels.Float](t *tensor.Dense) []F { return t.Data().([]F) }

func grF64s(t *tensor.Dense) []float64 { return t.Data().([]float64) }

// grKop is a gorgonia op backed by a Go kernel, with output elements of type O.
type grKop[O kernels.Float] struct {
	name    string
	id      int64
	inDims  []int          // number of dimensions of each input (0 = scalar)
	inTypes []tensor.Dtype // dtype of each input (default: O's)
	outDims int
	shape   func(in []tensor.Shape) (tensor.Shape, error)
	// fwd writes every element of out (row-major, shape from shape()).
	fwd func(out []O, in []*tensor.Dense) error
	// diff marks the inputs with a gradient; sym builds the gradient nodes (nil for the others).
	diff []bool
	sym  func(in G.Nodes, out, grad *G.Node) (G.Nodes, error)

	buf *tensor.Dense
}

func grNewKop[O kernels.Float](name string, inDims []int, outDims int) *grKop[O] {
	ts := make([]tensor.Dtype, len(inDims))
	for i := range ts {
		ts[i] = grDtype[O]()
	}
	return &grKop[O]{name: name, id: grOpSeq.Add(1), inDims: inDims, inTypes: ts, outDims: outDims, diff: make([]bool, len(inDims))}
}

// f64In marks inputs as float64 (data vectors, sums, incoming scalar gradients).
func (o *grKop[O]) f64In(idx ...int) *grKop[O] {
	for _, i := range idx {
		o.inTypes[i] = tensor.Float64
	}
	return o
}

func grType(dims int, dt tensor.Dtype) hm.Type {
	if dims == 0 {
		return dt
	}
	return G.TensorType{Dims: dims, Of: dt}
}

func (o *grKop[O]) Arity() int { return len(o.inDims) }
func (o *grKop[O]) Type() hm.Type {
	ts := make([]hm.Type, 0, len(o.inDims)+1)
	for i, d := range o.inDims {
		ts = append(ts, grType(d, o.inTypes[i]))
	}
	ts = append(ts, grType(o.outDims, grDtype[O]()))
	return hm.NewFnType(ts...)
}
func (o *grKop[O]) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
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
func (o *grKop[O]) ReturnsPtr() bool      { return false }
func (o *grKop[O]) CallsExtern() bool     { return false }
func (o *grKop[O]) OverwritesInput() int  { return -1 }
func (o *grKop[O]) WriteHash(h hash.Hash) { fmt.Fprintf(h, "bpo.%s#%d", o.name, o.id) }
func (o *grKop[O]) Hashcode() uint32 {
	h := fnv.New32a()
	o.WriteHash(h)
	return h.Sum32()
}
func (o *grKop[O]) String() string { return o.name }

func (o *grKop[O]) DiffWRT(n int) []bool { return append([]bool(nil), o.diff...) }

func (o *grKop[O]) SymDiff(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
	if o.sym == nil {
		return nil, fmt.Errorf("%s is not differentiable", o.name)
	}
	return o.sym(in, out, grad)
}

// inputs checks the values' types and materialises views.
func (o *grKop[O]) inputs(vals []G.Value) ([]*tensor.Dense, []tensor.Shape, error) {
	if len(vals) != len(o.inDims) {
		return nil, nil, fmt.Errorf("%s: want %d inputs, got %d", o.name, len(o.inDims), len(vals))
	}
	ins := make([]*tensor.Dense, len(vals))
	shapes := make([]tensor.Shape, len(vals))
	for i, v := range vals {
		d, ok := v.(*tensor.Dense)
		if !ok {
			return nil, nil, fmt.Errorf("%s: input %d is %T, want *tensor.Dense", o.name, i, v)
		}
		if d.Dtype() != o.inTypes[i] {
			return nil, nil, fmt.Errorf("%s: input %d has dtype %v, want %v", o.name, i, d.Dtype(), o.inTypes[i])
		}
		if d.IsMaterializable() {
			d = d.Materialize().(*tensor.Dense)
		}
		ins[i] = d
		shapes[i] = d.Shape()
	}
	return ins, shapes, nil
}

func (o *grKop[O]) Do(vals ...G.Value) (G.Value, error) {
	ins, shapes, err := o.inputs(vals)
	if err != nil {
		return nil, err
	}
	s, err := o.shape(shapes)
	if err != nil {
		return nil, err
	}
	if o.buf == nil || o.buf.Size() != s.TotalSize() {
		o.buf = tensor.New(tensor.WithShape(s.Clone()...), tensor.Of(grDtype[O]()))
	} else if !o.buf.Shape().Eq(s) {
		// somebody (a gorgonia Reshape) changed our buffer's header: restore it
		if err := o.buf.Reshape(s...); err != nil {
			return nil, err
		}
	}
	if err := o.fwd(grS[O](o.buf), ins); err != nil {
		return nil, fmt.Errorf("%s: %w", o.name, err)
	}
	return o.buf, nil
}

// grScalarKop is a grKop whose output may be a float64 scalar (*G.F64) and whose inputs may
// include float64 scalars (the cost's incoming gradient is a *G.F64): scalar inputs reach the
// kernel as 1-element vectors.
type grScalarKop[O kernels.Float] struct{ *grKop[O] }

func (o grScalarKop[O]) Do(vals ...G.Value) (G.Value, error) {
	conv := make([]G.Value, len(vals))
	for i, v := range vals {
		switch x := v.(type) {
		case *G.F64:
			conv[i] = tensor.New(tensor.WithShape(1), tensor.WithBacking([]float64{float64(*x)}))
		case *tensor.Dense:
			if x.Shape().IsScalar() && x.Dtype() == tensor.Float64 {
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
	ins, _, err := o.inputs(conv)
	if err != nil {
		return nil, err
	}
	var out [1]O
	if err := o.fwd(out[:], ins); err != nil {
		return nil, fmt.Errorf("%s: %w", o.name, err)
	}
	return G.NewF64(float64(out[0])), nil
}

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

// grInputGradOp builds the gradient of an op with nIn inputs of which only the first is
// differentiable: one kernel over args (of inDims dimensions, dtypes inTypes) whose output is
// shaped like args[0]. A scalar argument (the cost's gradient) needs grScalarKop's Do.
func grInputGradOp[O kernels.Float](name string, nIn int, inDims []int, inTypes []tensor.Dtype, fwd func(dx []O, in []*tensor.Dense) error, args ...*G.Node) (G.Nodes, error) {
	g := grNewKop[O](name, inDims, inDims[0])
	copy(g.inTypes, inTypes)
	g.shape = func(s []tensor.Shape) (tensor.Shape, error) { return s[0].Clone(), nil }
	g.fwd = fwd
	var op G.Op = g
	if slices.Contains(inDims, 0) {
		op = grScalarKop[O]{g}
	}
	dx, err := G.ApplyOp(op, args...)
	grads := make(G.Nodes, nIn)
	grads[0] = dx
	return grads, err
}

// grTypes lists dtypes: 'F' is F's, 'd' is float64.
func grTypes[F kernels.Float](spec string) []tensor.Dtype {
	ts := make([]tensor.Dtype, len(spec))
	for i, c := range spec {
		ts[i] = grDtype[F]()
		if c == 'd' {
			ts[i] = tensor.Float64
		}
	}
	return ts
}

// grInts converts float64 ids into buf (reused), checking each is an integer in [0, limit).
func grInts(buf *[]int, ids []float64, limit int, what string) error {
	if cap(*buf) < len(ids) {
		*buf = make([]int, len(ids))
	}
	*buf = (*buf)[:len(ids)]
	for n, f := range ids {
		v := int(f)
		if v < 0 || v >= limit || float64(v) != f {
			return fmt.Errorf("%s %v at %d outside [0,%d)", what, f, n, limit)
		}
		(*buf)[n] = v
	}
	return nil
}
