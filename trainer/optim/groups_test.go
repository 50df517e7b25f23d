package optim

import (
	"math"
	"strings"
	"testing"
)

func isMatrix(name string) bool { return strings.HasSuffix(name, ".weight") }

// TestGroupsHandComputed: one step at a constant rate; weight decay applies to the decayed
// group only. At step 1, m̂ = g and v̂ = g², so the Adam step is lr·g/(|g|+eps).
func TestGroupsHandComputed(t *testing.T) {
	const lr, wd, eps = 0.01, 0.1, 1e-8
	o, err := New(Config{LR: lr, Decay: Constant, MaxGradNorm: -1, Groups: []Group{{Name: "matrices", Match: isMatrix, WeightDecay: wd}}})
	if err != nil {
		t.Fatal(err)
	}
	p := map[string][]float64{"fc.weight": {1, -2}, "fc.bias": {1, -2}}
	g := map[string][]float64{"fc.weight": {0.5, 0.25}, "fc.bias": {0.5, 0.25}}
	o.Step(p, g)
	want := map[string][]float64{
		"fc.weight": {1*(1-lr*wd) - lr*0.5/(0.5+eps), -2*(1-lr*wd) - lr*0.25/(0.25+eps)},
		"fc.bias":   {1 - lr*0.5/(0.5+eps), -2 - lr*0.25/(0.25+eps)},
	}
	for n, w := range want {
		for i := range w {
			if !near(p[n][i], w[i], 1e-15) {
				t.Errorf("%s[%d] = %.17g, want %.17g", n, i, p[n][i], w[i])
			}
		}
	}
	if o.WeightDecay("fc.weight") != wd || o.WeightDecay("fc.bias") != 0 {
		t.Errorf("groups: %g %g", o.WeightDecay("fc.weight"), o.WeightDecay("fc.bias"))
	}
	// The first matching group wins; a nil Match takes every remaining parameter.
	o2, _ := New(Config{LR: 1, Decay: Constant, WeightDecay: 0.5, Groups: []Group{{Match: isMatrix, WeightDecay: 0.1}, {Name: "rest", WeightDecay: 0.2}}})
	if o2.WeightDecay("a.weight") != 0.1 || o2.WeightDecay("a.bias") != 0.2 {
		t.Errorf("group order: %g %g", o2.WeightDecay("a.weight"), o2.WeightDecay("a.bias"))
	}
}

// TestClippingAcrossGroups: the norm is taken over every group's gradients together, and
// every gradient is scaled by the same factor.
func TestClippingAcrossGroups(t *testing.T) {
	const lr, wd, eps = 0.1, 0.5, 1e-8
	o, _ := New(Config{LR: lr, Decay: Constant, MaxGradNorm: 1, Groups: []Group{{Match: isMatrix, WeightDecay: wd}}})
	p := map[string][]float64{"x.weight": {2}, "x.bias": {2}}
	g := map[string][]float64{"x.weight": {3}, "x.bias": {4}} // norm 3 in one group, 4 in the other: 5 together
	n, _ := o.Step(p, g)
	if n != 5 {
		t.Fatalf("norm %v, want 5", n)
	}
	st := o.State()
	if !near(st.M["x.weight"][0], 0.1*3.0/5, 1e-16) || !near(st.M["x.bias"][0], 0.1*4.0/5, 1e-16) {
		t.Errorf("moments %v: want (1-b1)·g/5", st.M)
	}
	if w := 2*(1-lr*wd) - lr*0.6/(0.6+eps); !near(p["x.weight"][0], w, 1e-15) {
		t.Errorf("x.weight = %.17g, want %.17g", p["x.weight"][0], w)
	}
	if w := 2 - lr*0.8/(0.8+eps); !near(p["x.bias"][0], w, 1e-15) {
		t.Errorf("x.bias = %.17g, want %.17g", p["x.bias"][0], w)
	}
}

// TestScheduleValues: warm-up, the cosine mid-point and the floor at TotalSteps.
func TestScheduleValues(t *testing.T) {
	// LR 1, warm-up 4, decay from step 4 to step 12, floor 0.1.
	cos := Config{LR: 1, Warmup: 4, TotalSteps: 12, MinLRRatio: 0.1, Decay: Cosine}
	lin := cos
	lin.Decay = Linear
	cases := []struct {
		s        int
		cos, lin float64
	}{
		{0, 0.25, 0.25}, {1, 0.5, 0.5}, {3, 1, 1}, // warm-up: (s+1)/4
		{4, 1, 1}, // the decay starts at LR
		{6, 0.1 + 0.9*0.5*(1+math.Sqrt2/2), 0.1 + 0.9*0.75},
		{8, 0.55, 0.55}, // mid-point: half-way between LR and the floor
		{10, 0.1 + 0.9*0.5*(1-math.Sqrt2/2), 0.1 + 0.9*0.25},
		{12, 0.1, 0.1}, {1000, 0.1, 0.1}, // the floor from TotalSteps on
	}
	for _, c := range cases {
		if got := cos.LRAt(c.s); !near(got, c.cos, 1e-15) {
			t.Errorf("cosine LRAt(%d) = %.17g, want %.17g", c.s, got, c.cos)
		}
		if got := lin.LRAt(c.s); !near(got, c.lin, 1e-15) {
			t.Errorf("linear LRAt(%d) = %.17g, want %.17g", c.s, got, c.lin)
		}
	}
	// TotalSteps == Warmup: straight from the warm-up to the floor.
	short := Config{LR: 2, Warmup: 2, TotalSteps: 2, MinLRRatio: 0.25, Decay: Cosine}
	if short.LRAt(1) != 2 || short.LRAt(2) != 0.5 {
		t.Errorf("no decay span: %v %v", short.LRAt(1), short.LRAt(2))
	}
	// Step uses the schedule: the rate it returns is LRAt of the steps taken before.
	o, err := New(cos)
	if err != nil {
		t.Fatal(err)
	}
	p := map[string][]float64{"w": {0}}
	for s := range 13 {
		if _, lr := o.Step(p, map[string][]float64{"w": {1}}); lr != cos.LRAt(s) {
			t.Errorf("step %d: lr %v, want %v", s, lr, cos.LRAt(s))
		}
	}
}

// TestSaveLoadResumesBitIdentically: N steps straight equal K steps, the state written as
// tensors, a fresh optimizer loading them, and N-K more steps (groups, warm-up, cosine decay
// and clipping all active).
func TestSaveLoadResumesBitIdentically(t *testing.T) {
	cfg := Config{LR: 0.05, Warmup: 2, TotalSteps: 9, MinLRRatio: 0.1, Decay: Cosine, MaxGradNorm: 2,
		Groups: []Group{{Name: "A", Match: func(n string) bool { return strings.HasSuffix(n, "lora_A") }, WeightDecay: 0.1}}}
	const N, K = 10, 4
	full, _ := New(cfg)
	pf := params()
	for s := range N {
		full.Step(pf, gradAt(s, pf))
	}

	first, _ := New(cfg)
	pr := params()
	for s := range K {
		first.Step(pr, gradAt(s, pr))
	}
	// "Save": the tensors and the step, copied as a file would hold them.
	saved := map[string][]float64{}
	for n, v := range first.State().Tensors() {
		saved[n] = append([]float64(nil), v...)
	}
	step := first.Steps()
	// "Load" into a fresh optimizer.
	st, err := StateFromTensors(step, saved)
	if err != nil {
		t.Fatal(err)
	}
	second, _ := New(cfg)
	if err := second.Restore(st); err != nil {
		t.Fatal(err)
	}
	if err := second.Check(pr); err != nil {
		t.Fatal(err)
	}
	for s := K; s < N; s++ {
		second.Step(pr, gradAt(s, pr))
	}
	for n := range pf {
		for i := range pf[n] {
			if math.Float64bits(pf[n][i]) != math.Float64bits(pr[n][i]) {
				t.Errorf("%s[%d]: straight %.17g, resumed %.17g", n, i, pf[n][i], pr[n][i])
			}
		}
	}
	a, b := full.State(), second.State()
	for n := range a.M {
		for i := range a.M[n] {
			if math.Float64bits(a.M[n][i]) != math.Float64bits(b.M[n][i]) || math.Float64bits(a.V[n][i]) != math.Float64bits(b.V[n][i]) {
				t.Errorf("%s[%d]: moments differ after resuming", n, i)
			}
		}
	}
	if _, err := StateFromTensors(1, map[string][]float64{"w/x": {1}}); err == nil {
		t.Error("StateFromTensors accepted a tensor that is no moment")
	}
}
