package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// grTinyConfig is the gradient-check model: vocab 11, d 8, 2 heads, 2 layers.
func grTinyConfig() Config {
	return Config{ModelType: "gpt2", VocabSize: 11, NPositions: 16, NEmbd: 8, NLayer: 2, NHead: 2,
		LayerNormEpsilon: 1e-5, ActivationFunction: "gelu_new", BOSTokenID: 10, EOSTokenID: 10}
}

func grRandTensor(rng *rand.Rand, std float64, shape ...int) *Tensor {
	t := NewTensor(shape...)
	for i := range t.Data {
		t.Data[i] = rng.NormFloat64() * std
	}
	return t
}

// grRandomWeights draws a GPT-2 weight set (std 0.3 so that every nonlinearity is exercised,
// LayerNorm gains around 1).
func grRandomWeights(rng *rand.Rand, cfg Config) *Weights {
	d := cfg.NEmbd
	w := &Weights{Config: cfg, Tensors: map[string]*Tensor{}}
	w.Tensors["wte.weight"] = grRandTensor(rng, 0.3, cfg.VocabSize, d)
	w.Tensors["wpe.weight"] = grRandTensor(rng, 0.1, cfg.NPositions, d)
	lnp := func(p string) {
		g := grRandTensor(rng, 0.1, d)
		for i := range g.Data {
			g.Data[i] += 1
		}
		w.Tensors[p+".weight"] = g
		w.Tensors[p+".bias"] = grRandTensor(rng, 0.1, d)
	}
	lin := func(p string, in, out int) {
		w.Tensors[p+".weight"] = grRandTensor(rng, 1/math.Sqrt(float64(in)), in, out)
		w.Tensors[p+".bias"] = grRandTensor(rng, 0.1, out)
	}
	for l := 0; l < cfg.NLayer; l++ {
		p := fmt.Sprintf("h.%d.", l)
		lnp(p + "ln_1")
		lin(p+"attn.c_attn", d, 3*d)
		lin(p+"attn.c_proj", d, d)
		lnp(p + "ln_2")
		lin(p+"mlp.c_fc", d, 4*d)
		lin(p+"mlp.c_proj", 4*d, d)
	}
	lnp("ln_f")
	return w
}

// grRandomAdapter draws an adapter with nonzero B (so that gradients reach A).
func grRandomAdapter(rng *rand.Rand, cfg Config, r int, alpha, std float64) *Adapter {
	a := &Adapter{Rank: r, Alpha: alpha, Tensors: map[string]*Tensor{}}
	shapes := cfg.AdapterShapes(r)
	names := make([]string, 0, len(shapes))
	for name := range shapes {
		names = append(names, name)
	}
	sort.Strings(names) // deterministic draws
	for _, name := range names {
		a.Tensors[name] = grRandTensor(rng, std, shapes[name]...)
	}
	return a
}

func grZeroBAdapter(rng *rand.Rand, cfg Config, r int, alpha float64) *Adapter {
	a := grRandomAdapter(rng, cfg, r, alpha, 0.3)
	for name, t := range a.Tensors {
		if name[len(name)-1] == 'B' {
			clear(t.Data)
		}
	}
	return a
}

// grRandomBatch draws B sequences with random lengths in [T-2,T], prompts of 1-3 tokens and the rest
// response.
func grRandomBatch(rng *rand.Rand, cfg Config, B, T int) Batch {
	b := Batch{Tokens: make([][]int, B), Mask: make([][]bool, B)}
	for i := range B {
		n := T - rng.IntN(3)
		p := 1 + rng.IntN(3)
		b.Tokens[i] = make([]int, n)
		b.Mask[i] = make([]bool, n)
		for j := range n {
			b.Tokens[i][j] = rng.IntN(cfg.VocabSize)
			b.Mask[i][j] = j >= p
		}
	}
	return b
}

// Test-side preference losses on gorgonia nodes (trainer/loss owns the production ones).
func grHNode(pc, pr, rc, rr *G.Node) (*G.Node, error) {
	a, err := G.Sub(pc, rc)
	if err != nil {
		return nil, err
	}
	b, err := G.Sub(pr, rr)
	if err != nil {
		return nil, err
	}
	return G.Sub(a, b)
}

func grTestLoss(kind string, beta float64) LossFunc {
	return func(pc, pr, rc, rr *G.Node) (*G.Node, error) {
		h, err := grHNode(pc, pr, rc, rr)
		if err != nil {
			return nil, err
		}
		bh, err := G.HadamardProd(h, G.NewConstant(beta))
		if err != nil {
			return nil, err
		}
		var per *G.Node
		switch kind {
		case "DPO": // -log σ(βh) = softplus(-βh)
			nb, err := G.Neg(bh)
			if err != nil {
				return nil, err
			}
			per, err = G.Softplus(nb)
			if err != nil {
				return nil, err
			}
		case "IPO":
			c, err := G.Sub(h, G.NewConstant(1/(2*beta)))
			if err != nil {
				return nil, err
			}
			if per, err = G.Square(c); err != nil {
				return nil, err
			}
		case "SLiC":
			c, err := G.Sub(G.NewConstant(1.0), bh)
			if err != nil {
				return nil, err
			}
			if per, err = G.Rectify(c); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("unknown loss %q", kind)
		}
		return G.Mean(per)
	}
}

// grPlainLoss is the float reference of grTestLoss.
func grPlainLoss(kind string, beta float64, pc, pr, rc, rr []float64) float64 {
	var s float64
	for i := range pc {
		h := (pc[i] - rc[i]) - (pr[i] - rr[i])
		switch kind {
		case "DPO":
			s += math.Log1p(math.Exp(-beta * h))
		case "IPO":
			s += (h - 1/(2*beta)) * (h - 1/(2*beta))
		case "SLiC":
			s += math.Max(0, 1-beta*h)
		}
	}
	return s / float64(len(pc))
}

// grRelErr compares an analytic gradient with a numeric one. It returns the largest elementwise
// relative error |a-n|/max(|a|,|n|) over the entries whose magnitude is at least 1e-4 of the
// tensor's largest entry (smaller ones are round-off dominated and are covered by the normwise
// error), and the normwise error ‖a-n‖/‖n‖.
func grRelErr(a, n []float64) (elem, norm float64) {
	var scale, diff2, n2 float64
	for i := range n {
		scale = math.Max(scale, math.Max(math.Abs(a[i]), math.Abs(n[i])))
		diff2 += (a[i] - n[i]) * (a[i] - n[i])
		n2 += n[i] * n[i]
	}
	if scale == 0 {
		return 0, 0
	}
	for i := range n {
		m := math.Max(math.Abs(a[i]), math.Abs(n[i]))
		if m < 1e-4*scale {
			continue
		}
		elem = math.Max(elem, math.Abs(a[i]-n[i])/m)
	}
	return elem, math.Sqrt(diff2 / math.Max(n2, 1e-300))
}

// grFdGrad is the finite-difference gradient of f with respect to x (perturbed in place): the
// fourth-order central stencil (8[f(x+h)-f(x-h)] - [f(x+2h)-f(x-2h)]) / 12h with h = 1e-3, whose
// truncation error is O(h^4) (about 1e-12) and round-off O(eps*|f|/h) (about 1e-13*|f|).
func grFdGrad(t *testing.T, x []float64, f func() float64) []float64 {
	t.Helper()
	const h = 1e-3
	g := make([]float64, len(x))
	for i := range x {
		v := x[i]
		at := func(d float64) float64 { x[i] = v + d; return f() }
		g[i] = (8*(at(h)-at(-h)) - (at(2*h) - at(-2*h))) / (12 * h)
		x[i] = v
	}
	return g
}

// grGraphInput is a differentiable (or not) input of a layer gradient check.
type grGraphInput struct {
	name  string
	value *tensor.Dense
	diff  bool
}

func grDenseOf(t *Tensor) *tensor.Dense {
	return tensor.New(tensor.WithShape(t.Shape...), tensor.WithBacking(t.Data))
}

// grLayerGradCheck builds L = Σ f(inputs) ∘ R for a fixed random R, differentiates it with gorgonia
// and compares with central differences for every differentiable input. It returns the worst
// elementwise and normwise relative errors.
func grLayerGradCheck(t *testing.T, rng *rand.Rand, inputs []grGraphInput, f func(g *G.ExprGraph, in G.Nodes) (*G.Node, error)) (float64, float64) {
	t.Helper()
	g := G.NewGraph()
	nodes := make(G.Nodes, len(inputs))
	var wrt G.Nodes
	var wrtIdx []int
	for i, in := range inputs {
		nodes[i] = G.NewTensor(g, tensor.Float64, in.value.Dims(), G.WithShape(in.value.Shape()...), G.WithName(in.name), G.WithValue(in.value))
		if in.diff {
			wrt = append(wrt, nodes[i])
			wrtIdx = append(wrtIdx, i)
		}
	}
	y, err := f(g, nodes)
	if err != nil {
		t.Fatal(err)
	}
	R := tensor.New(tensor.WithShape(y.Shape()...), tensor.Of(tensor.Float64))
	for i, v := range R.Data().([]float64) {
		_ = v
		R.Data().([]float64)[i] = rng.NormFloat64()
	}
	rn := G.NewTensor(g, tensor.Float64, y.Dims(), G.WithShape(y.Shape()...), G.WithName("R"), G.WithValue(R))
	yr, err := G.HadamardProd(y, rn)
	if err != nil {
		t.Fatal(err)
	}
	loss, err := G.Sum(yr)
	if err != nil {
		t.Fatal(err)
	}
	grads, err := G.Grad(loss, wrt...)
	if err != nil {
		t.Fatal(err)
	}
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	run := func() float64 {
		if err := vm.RunAll(); err != nil {
			t.Fatal(err)
		}
		vm.Reset()
		return grScalarValue(loss.Value())
	}
	run()
	analytic := make([][]float64, len(grads))
	for k, gn := range grads {
		analytic[k] = append([]float64(nil), gn.Value().Data().([]float64)...)
	}
	var worstE, worstN float64
	for k, i := range wrtIdx {
		num := grFdGrad(t, inputs[i].value.Data().([]float64), run)
		e, n := grRelErr(analytic[k], num)
		t.Logf("  d/d%-8s elementwise rel err %.3g, normwise %.3g (|g|max %.3g)", inputs[i].name, e, n, grMaxAbs(num))
		worstE, worstN = math.Max(worstE, e), math.Max(worstN, n)
	}
	return worstE, worstN
}

func grMaxAbs(x []float64) float64 {
	var m float64
	for _, v := range x {
		m = math.Max(m, math.Abs(v))
	}
	return m
}

// grTargetsAndMask draws N random target tokens and a loss mask with about 2/3 of the rows on.
func grTargetsAndMask(rng *rand.Rand, N int) (tgt, mask *tensor.Dense) {
	tgt = tensor.New(tensor.WithShape(N), tensor.Of(tensor.Float64))
	mask = tensor.New(tensor.WithShape(N), tensor.Of(tensor.Float64))
	for i := range N {
		tgt.Data().([]float64)[i] = float64(rng.IntN(grGCV))
		if rng.IntN(3) > 0 {
			mask.Data().([]float64)[i] = 1
		}
	}
	return tgt, mask
}
