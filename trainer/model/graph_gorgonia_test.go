package model

import (
	"math"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Probes of gorgonia v0.9.18 behaviour that the training graph works around. They log what they
// find (so a gorgonia upgrade shows up in the test log) and fail only where our code relies on the
// behaviour.

func grRun(t *testing.T, vm G.VM) {
	t.Helper()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	vm.Reset()
}

func grVec(g *G.ExprGraph, name string, v ...float64) *G.Node {
	return G.NewVector(g, tensor.Float64, G.WithShape(len(v)), G.WithName(name),
		G.WithValue(tensor.New(tensor.WithShape(len(v)), tensor.WithBacking(v))))
}

// InverseSqrt's gradient: d/dx x^-1/2 = -1/2 x^-3/2.
func TestGorgoniaInverseSqrtGradient(t *testing.T) {
	g := G.NewGraph()
	x := grVec(g, "x", 0.5, 2, 4)
	y := G.Must(G.InverseSqrt(x))
	gr, err := G.Grad(G.Must(G.Sum(y)), x)
	if err != nil {
		t.Fatal(err)
	}
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	grRun(t, vm)
	got := gr[0].Value().Data().([]float64)
	var worst float64
	for i, v := range []float64{0.5, 2, 4} {
		worst = math.Max(worst, math.Abs(got[i]-(-0.5*math.Pow(v, -1.5))))
	}
	t.Logf("InverseSqrt gradient max error %.3g (defect present: %v); the graph never uses InverseSqrt (LayerNorm is a fused op)", worst, worst > 1e-9)
}

// ByIndices gradient on a 1-D input vs a (N,1) reshape.
func TestGorgoniaByIndicesGradient(t *testing.T) {
	check := func(twoD bool) float64 {
		g := G.NewGraph()
		x := grVec(g, "x", 1, 2, 3, 4)
		in := x
		if twoD {
			in = G.Must(G.Reshape(x, tensor.Shape{4, 1}))
		}
		idx := G.NewVector(g, tensor.Int, G.WithShape(3), G.WithName("idx"),
			G.WithValue(tensor.New(tensor.WithShape(3), tensor.WithBacking([]int{2, 0, 2}))))
		sel := G.Must(G.ByIndices(in, idx, 0))
		w := grVec(g, "w", 10, 20, 30)
		if twoD {
			w = G.Must(G.Reshape(w, tensor.Shape{3, 1}))
		}
		loss := G.Must(G.Sum(G.Must(G.HadamardProd(sel, w))))
		gr, err := G.Grad(loss, x)
		if err != nil {
			t.Logf("ByIndices (2-D=%v): Grad failed: %v", twoD, err)
			return math.Inf(1)
		}
		vm := G.NewTapeMachine(g)
		defer vm.Close()
		want := []float64{20, 0, 40, 0}
		var worst float64
		for run := 1; run <= 2; run++ { // the second run catches stale accumulation
			if err := vm.RunAll(); err != nil {
				t.Logf("ByIndices (2-D=%v): run failed: %v", twoD, err)
				return math.Inf(1)
			}
			vm.Reset()
			got := gr[0].Value().Data().([]float64)
			for i := range want {
				worst = math.Max(worst, math.Abs(got[i]-want[i]))
			}
			t.Logf("ByIndices (2-D=%v) run %d: gradient %v, want %v", twoD, run, got, want)
		}
		return worst
	}
	e1, e2 := check(false), check(true)
	t.Logf("ByIndices gradient error: 1-D input %.3g, (N,1) input %.3g; the graph uses its own Embed op", e1, e2)
}

// RunAll on a machine that was not Reset does not run again.
func TestGorgoniaRunAllNeedsReset(t *testing.T) {
	g := G.NewGraph()
	data := []float64{1, 2}
	x := grVec(g, "x", data...)
	y := G.Must(G.Sum(G.Must(G.Square(x))))
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	data[0] = 3
	x.Value().Data().([]float64)[0] = 3
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	stale := y.Value().Data().(float64)
	vm.Reset()
	grRun(t, vm)
	fresh := y.Value().Data().(float64)
	t.Logf("second RunAll without Reset: %v (stale: %v); after Reset: %v", stale, stale == 5, fresh)
	if fresh != 13 {
		t.Fatalf("after Reset: %v, want 13", fresh)
	}
}

// A node listed as an output can still be overwritten in place by a later unsafe op that reads it.
func TestGorgoniaOutputOverwrittenInPlace(t *testing.T) {
	g := G.NewGraph()
	x := grVec(g, "x", 1, 2, 3)
	c := grVec(g, "c", 2, 2, 2)
	y := G.Must(G.Exp(x))
	z := G.Must(G.HadamardDiv(y, c))
	loss := G.Must(G.Sum(z))
	prog, locs, err := G.CompileFunction(g, G.Nodes{x, c}, G.Nodes{y, loss})
	if err != nil {
		t.Fatal(err)
	}
	vm := G.NewTapeMachine(g, G.WithPrecompiled(prog, locs))
	defer vm.Close()
	grRun(t, vm)
	got := y.Value().Data().([]float64)[0]
	t.Logf("y = exp(1) = %.6f read after the run: %.6f (overwritten in place by y/c: %v); the graph uses its own PerToken op", math.E, got, got != math.E)
}

// Softplus switches to the identity above 16 (relative error up to about 1e-7 there).
func TestGorgoniaSoftplusCutoff(t *testing.T) {
	g := G.NewGraph()
	x := grVec(g, "x", 16, 17, 30)
	y := G.Must(G.Softplus(x))
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	grRun(t, vm)
	for i, v := range []float64{16, 17, 30} {
		got := y.Value().Data().([]float64)[i]
		t.Logf("softplus(%v) = %.17g, exact %.17g", v, got, v+math.Log1p(math.Exp(-v)))
	}
}
