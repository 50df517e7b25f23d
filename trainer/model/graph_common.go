package model

import (
	"fmt"
	"runtime"
	"slices"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/bpo-dev/bpo/trainer/model/kernels"
)

// grNewVM wraps G.NewTapeMachine. gorgonia sets a finalizer on every tape machine (to release
// CUDA state), and the machine sits in a reference cycle with its program; Go never collects a
// cycle that holds a finalizer, so every trainer a process built stayed in memory for good
// (about 126 MB each at d96/L2, batch 32 x 60 tokens: an experiment grid reached 24 GB and was
// OOM-killed). We never use CUDA, so the finalizer is dropped and the machine is collected
// like any other object once the trainer is unreachable.
func grNewVM(g *G.ExprGraph, opts ...G.VMOpt) G.VM {
	vm := G.NewTapeMachine(g, opts...)
	runtime.SetFinalizer(vm, nil)
	return vm
}

// grCheckGraph validates what both trainers' graphs need of the config and the batch shape.
func grCheckGraph(cfg Config, batch, seqLen int) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	switch {
	case batch <= 0 || seqLen <= 0:
		return fmt.Errorf("model: batch (%d) and seqLen (%d) must be > 0", batch, seqLen)
	case seqLen > cfg.NPositions:
		return fmt.Errorf("model: seqLen %d exceeds n_positions %d", seqLen, cfg.NPositions)
	case cfg.ActivationFunction != "" && cfg.ActivationFunction != "gelu_new":
		return fmt.Errorf("model: activation_function %q not supported (want gelu_new)", cfg.ActivationFunction)
	}
	return nil
}

// grBuilder builds either trainer's graph over weights w in precision F: the per-call data vectors,
// the base tensors that are graph inputs and the adapter tensors, collecting the inputs (after the
// data vectors, in graph order) and the trained tensors.
type grBuilder[F kernels.Float] struct {
	grTrained
	g         *G.ExprGraph
	w         *Weights
	what      string // how errors name w
	trainBase bool   // base tensors made inputs are trained (full-parameter LM)
	rank      int
	scale     *float64 // alpha/r of the bound adapter, read by the LoRA ops at run time
	adapter   map[string][]int
	inputs    G.Nodes
	// syncs are the graph inputs that hold float32 copies of float64 base tensors: bound again
	// from the master copy before every run (full-parameter training updates the master).
	syncs []grSync
}

// grSync is a graph input whose value is a converted copy of a base tensor.
type grSync struct {
	name   string
	master *Tensor
	value  *tensor.Dense
}

func grNewBuilder[F kernels.Float](w *Weights, what string, trainBase bool, rank int, scale *float64) *grBuilder[F] {
	b := &grBuilder[F]{g: G.NewGraph(), w: w, what: what, trainBase: trainBase, rank: rank, scale: scale}
	if rank > 0 {
		b.adapter = w.Config.AdapterShapes(rank)
	}
	return b
}

// vec adds a float64 data vector of n elements whose value is filled per call.
func (b *grBuilder[F]) vec(name string, n int) (*G.Node, *tensor.Dense) {
	v := tensor.New(tensor.WithShape(n), tensor.Of(tensor.Float64))
	return G.NewVector(b.g, tensor.Float64, G.WithShape(n), G.WithName(name), G.WithValue(v)), v
}

// tensor returns the base tensor name, checking its shape.
func (b *grBuilder[F]) tensor(name string, shape ...int) (*Tensor, error) {
	t, ok := b.w.Tensors[name]
	if !ok {
		return nil, fmt.Errorf("model: %s lack %q", b.what, name)
	}
	if !slices.Equal(t.Shape, shape) || len(t.Data) != wioNumel(shape) {
		return nil, fmt.Errorf("model: %s has shape %v, want %v", name, t.Shape, shape)
	}
	return t, nil
}

// weight returns the frozen base tensor name in precision F: a view in float64, a copy in float32.
func (b *grBuilder[F]) weight(name string, shape ...int) ([]F, error) {
	t, err := b.tensor(name, shape...)
	if err != nil {
		return nil, err
	}
	return grAs[F](t.Data), nil
}

// grAs returns src as []F: src itself for float64, a converted copy for float32.
func grAs[F kernels.Float](src []float64) []F {
	if v, ok := any(src).([]F); ok {
		return v
	}
	out := make([]F, len(src))
	for i, x := range src {
		out[i] = F(x)
	}
	return out
}

// input makes the base tensor name a graph input (trained when trainBase). In float64 its value
// views the tensor's data; in float32 it is a copy, refreshed from the tensor before every run.
func (b *grBuilder[F]) input(name string, shape ...int) (*G.Node, error) {
	t, err := b.tensor(name, shape...)
	if err != nil {
		return nil, err
	}
	data := grAs[F](t.Data)
	v := tensor.New(tensor.WithShape(shape...), tensor.WithBacking(data))
	if _, view := any(t.Data).([]F); !view {
		b.syncs = append(b.syncs, grSync{name: name, master: t, value: v})
	}
	n := G.NewTensor(b.g, grDtype[F](), len(shape), G.WithShape(shape...), G.WithName(name), G.WithValue(v))
	b.inputs = append(b.inputs, n)
	if b.trainBase {
		b.add(name, n, v)
	}
	return n, nil
}

// adapterParam adds the trained adapter tensor name (its value is bound per call).
func (b *grBuilder[F]) adapterParam(name string) *G.Node {
	s := b.adapter[name]
	v := tensor.New(tensor.WithShape(s...), tensor.Of(grDtype[F]()))
	n := G.NewMatrix(b.g, grDtype[F](), G.WithShape(s...), G.WithName(name), G.WithValue(v))
	b.inputs = append(b.inputs, n)
	b.add(name, n, v)
	return n
}

// frozenLayerNorm is a LayerNorm whose gain and bias are frozen base tensors.
func (b *grBuilder[F]) frozenLayerNorm(x *G.Node, prefix string) (*G.Node, error) {
	d := b.w.Config.NEmbd
	gw, err := b.weight(prefix+".weight", d)
	if err != nil {
		return nil, err
	}
	gb, err := b.weight(prefix+".bias", d)
	if err != nil {
		return nil, err
	}
	return grLayerNormOp(x, gw, gb, b.w.Config.LayerNormEpsilon)
}

// loraLinear is a frozen base Conv1D plus the trained LoRA adapter of rank b.rank.
func (b *grBuilder[F]) loraLinear(x *G.Node, prefix string, in, out int) (*G.Node, error) {
	W, err := b.weight(prefix+".weight", in, out)
	if err != nil {
		return nil, err
	}
	bias, err := b.weight(prefix+".bias", out)
	if err != nil {
		return nil, err
	}
	A, B := b.adapterParam(prefix+".lora_A"), b.adapterParam(prefix+".lora_B")
	return grLoraLinearOp(x, A, B, &grLoraParams[F]{W: W, Bias: bias, In: in, Out: out, Rank: b.rank, Scale: b.scale})
}

// decoder builds the GPT-2 decoder on the token ids tok: wte and wpe as graph inputs, the
// embedding (positions pos, or n mod T when pos is nil), the pre-LayerNorm blocks with causal
// attention (confined to documents by start when not nil) and the final LayerNorm. The two
// trainers differ only in how a LayerNorm and a Conv1D projection are built (frozen base + LoRA,
// or full parameters). It returns the hidden states and wte, for the tied output projection.
func (b *grBuilder[F]) decoder(tok, pos, start *G.Node, batch, T int,
	ln func(x *G.Node, prefix string) (*G.Node, error),
	linear func(x *G.Node, prefix string, in, out int) (*G.Node, error),
) (x, wte *G.Node, err error) {
	cfg := b.w.Config
	d := cfg.NEmbd
	if wte, err = b.input("wte.weight", cfg.VocabSize, d); err != nil {
		return nil, nil, err
	}
	wpe, err := b.input("wpe.weight", cfg.NPositions, d)
	if err != nil {
		return nil, nil, err
	}
	if x, err = grEmbedAtOp[F](wte, wpe, tok, pos, T); err != nil {
		return nil, nil, err
	}
	for l := 0; l < cfg.NLayer; l++ {
		p := fmt.Sprintf("h.%d.", l)
		a, err := ln(x, p+"ln_1")
		if err != nil {
			return nil, nil, err
		}
		if a, err = linear(a, p+"attn.c_attn", d, 3*d); err != nil {
			return nil, nil, err
		}
		if a, err = grCausalAttentionOp[F](a, start, batch, T, d, cfg.NHead); err != nil {
			return nil, nil, err
		}
		if a, err = linear(a, p+"attn.c_proj", d, d); err != nil {
			return nil, nil, err
		}
		if x, err = G.Add(x, a); err != nil {
			return nil, nil, err
		}
		m, err := ln(x, p+"ln_2")
		if err != nil {
			return nil, nil, err
		}
		if m, err = linear(m, p+"mlp.c_fc", d, 4*d); err != nil {
			return nil, nil, err
		}
		if m, err = grGeluOp[F](m); err != nil {
			return nil, nil, err
		}
		if m, err = linear(m, p+"mlp.c_proj", 4*d, d); err != nil {
			return nil, nil, err
		}
		if x, err = G.Add(x, m); err != nil {
			return nil, nil, err
		}
	}
	x, err = ln(x, "ln_f")
	return x, wte, err
}

// grTrained lists a graph's trained tensors in graph order: names, input nodes and values.
type grTrained struct {
	names  []string
	params []*G.Node
	paramV []*tensor.Dense
}

func (p *grTrained) add(name string, n *G.Node, v *tensor.Dense) {
	p.names = append(p.names, name)
	p.params = append(p.params, n)
	p.paramV = append(p.paramV, v)
}

// copyAdapter copies a's tensors into the trained adapter tensors and returns its scale.
func (p *grTrained) copyAdapter(a *Adapter, rank int) (float64, error) {
	if a.Rank != rank {
		return 0, fmt.Errorf("model: adapter rank %d, trainer rank %d", a.Rank, rank)
	}
	for i, name := range p.names {
		src, ok := a.Tensors[name]
		if !ok {
			return 0, fmt.Errorf("model: adapter lacks %q", name)
		}
		dst := p.paramV[i]
		if !slices.Equal(src.Shape, dst.Shape()) || len(src.Data) != dst.Size() {
			return 0, fmt.Errorf("model: adapter %s has shape %v, want %v", name, src.Shape, []int(dst.Shape()))
		}
		grSetFrom64(dst, src.Data)
	}
	return a.Scale(), nil
}

// gradTensors copies the values of grads (one per trained tensor) out of the graph, by name.
func (p *grTrained) gradTensors(grads []*G.Node) map[string]*Tensor {
	out := make(map[string]*Tensor, len(p.names))
	for i, name := range p.names {
		gv := grads[i].Value().(*tensor.Dense)
		gt := &Tensor{Shape: append([]int(nil), p.paramV[i].Shape()...), Data: grTo64(nil, gv)}
		out[name] = gt
	}
	return out
}

// grBatchInputs are the per-call data inputs of both graphs: token ids, shifted targets and 0/1
// weights (row n predicts token n+1), [N] each.
type grBatchInputs struct {
	tok, tgt, wt    *G.Node
	tokV, tgtV, wtV *tensor.Dense
}

func (b *grBuilder[F]) batchInputs(N int, weightName string) grBatchInputs {
	var in grBatchInputs
	in.tok, in.tokV = b.vec("tokens", N)
	in.tgt, in.tgtV = b.vec("targets", N)
	in.wt, in.wtV = b.vec(weightName, N)
	return in
}

// fill fills the inputs from a batch of `batch` rows of at most T tokens and returns the
// number of masked tokens; counts, if not nil, receives them per row.
func (in *grBatchInputs) fill(b Batch, batch, T, V int, counts []int) (int, error) {
	tok, tgt, wt := grF64s(in.tokV), grF64s(in.tgtV), grF64s(in.wtV)
	if len(b.Tokens) != batch {
		return 0, fmt.Errorf("model: batch has %d sequences, trainer expects %d", len(b.Tokens), batch)
	}
	if len(b.Mask) != batch {
		return 0, fmt.Errorf("model: batch mask has %d rows, want %d", len(b.Mask), batch)
	}
	clear(tok)
	clear(tgt)
	clear(wt)
	clear(counts)
	count := 0
	for i, row := range b.Tokens {
		if len(row) > T {
			return 0, fmt.Errorf("model: sequence %d has %d tokens, trainer seqLen is %d", i, len(row), T)
		}
		if len(b.Mask[i]) > len(row) {
			return 0, fmt.Errorf("model: mask row %d is longer (%d) than its tokens (%d)", i, len(b.Mask[i]), len(row))
		}
		for j, v := range row {
			if v < 0 || v >= V {
				return 0, fmt.Errorf("model: token %d at [%d][%d] outside the vocabulary [0,%d)", v, i, j, V)
			}
			tok[i*T+j] = float64(v)
		}
		for j, m := range b.Mask[i] {
			if !m {
				continue
			}
			if j == 0 {
				return 0, fmt.Errorf("model: mask[%d][0] is set, but no logit predicts a first token", i)
			}
			tgt[i*T+j-1] = float64(row[j])
			wt[i*T+j-1] = 1
			count++
			if counts != nil {
				counts[i]++
			}
		}
	}
	return count, nil
}

// grCompileVM compiles the program from in to out (pruning what it does not need) into a VM.
func grCompileVM(g *G.ExprGraph, in, out G.Nodes, what string) (G.VM, error) {
	prog, locs, err := G.CompileFunction(g, in, out)
	if err != nil {
		return nil, fmt.Errorf("model: compiling the %s program: %w", what, err)
	}
	return grNewVM(g, G.WithPrecompiled(prog, locs)), nil
}

func grRunVM(vm G.VM) error {
	err := vm.RunAll()
	vm.Reset()
	return err
}

// grSetFrom64 copies float64 values into a float32 or float64 dense tensor.
func grSetFrom64(dst *tensor.Dense, src []float64) {
	switch d := dst.Data().(type) {
	case []float64:
		copy(d, src)
	case []float32:
		for i, v := range src[:len(d)] {
			d[i] = float32(v)
		}
	default:
		panic(fmt.Sprintf("model: tensor of dtype %v", dst.Dtype()))
	}
}

// grTo64 returns a float32 or float64 dense tensor's values as float64 (into dst when it is large
// enough, else a new slice).
func grTo64(dst []float64, src *tensor.Dense) []float64 {
	if cap(dst) < src.Size() {
		dst = make([]float64, src.Size())
	}
	dst = dst[:src.Size()]
	switch d := src.Data().(type) {
	case []float64:
		copy(dst, d)
	case []float32:
		for i, v := range d {
			dst[i] = float64(v)
		}
	default:
		panic(fmt.Sprintf("model: tensor of dtype %v", src.Dtype()))
	}
	return dst
}

// sync copies the master copies into the graph's float32 inputs (no-op in float64).
func grSyncInputs(syncs []grSync) {
	for _, s := range syncs {
		grSetFrom64(s.value, s.master.Data)
	}
}

func grScalarValue(v G.Value) float64 {
	switch x := v.(type) {
	case *G.F64:
		return float64(*x)
	case *tensor.Dense:
		if x.Shape().IsScalar() {
			return x.Data().(float64)
		}
		return grF64s(x)[0]
	}
	return 0
}
