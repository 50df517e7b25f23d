package optim

import (
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"
)

func near(a, b, tol float64) bool { return math.Abs(a-b) <= tol }

func TestHandComputedTwoSteps(t *testing.T) {
	o, err := New(Config{LR: 0.01, WeightDecay: 0.1, Decay: Constant})
	if err != nil {
		t.Fatal(err)
	}
	p := map[string][]float64{"w": {1.0, -2.0}}
	// Step 1, g = (0.1, -0.2): m = 0.1 g, v = 0.001 g^2, m̂ = g, v̂ = g^2, so the Adam
	// step is lr*g/(|g|+eps) = ±0.01*(1 - ~1e-7); decay first multiplies p by 1 - 0.001.
	n, lr := o.Step(p, map[string][]float64{"w": {0.1, -0.2}})
	if !near(n, math.Sqrt(0.05), 1e-15) || lr != 0.01 {
		t.Fatalf("norm %v lr %v", n, lr)
	}
	w0 := 1.0*0.999 - 0.01*0.1/(0.1+1e-8)
	w1 := -2.0*0.999 + 0.01*0.2/(0.2+1e-8)
	if !near(p["w"][0], w0, 1e-15) || !near(p["w"][1], w1, 1e-15) {
		t.Fatalf("step 1: %v, want [%v %v]", p["w"], w0, w1)
	}
	// Step 2, g = (0.3, 0):
	//   w[0]: m = 0.9*0.01 + 0.1*0.3 = 0.039; v = 0.999*1e-5 + 0.001*0.09 = 9.999e-5
	//         m̂ = 0.039/0.19; v̂ = 9.999e-5/(1-0.999^2) = 9.999e-5/0.001999
	//   w[1]: m = 0.9*(-0.02) = -0.018; v = 0.999*4e-5 = 3.996e-5
	o.Step(p, map[string][]float64{"w": {0.3, 0}})
	w0 = w0*0.999 - 0.01*(0.039/0.19)/(math.Sqrt(9.999e-5/0.001999)+1e-8)
	w1 = w1*0.999 - 0.01*(-0.018/0.19)/(math.Sqrt(3.996e-5/0.001999)+1e-8)
	if !near(p["w"][0], w0, 1e-14) || !near(p["w"][1], w1, 1e-14) {
		t.Fatalf("step 2: %v, want [%v %v]", p["w"], w0, w1)
	}
	t.Logf("after two steps: %.15f %.15f", p["w"][0], p["w"][1])
}

// TestMatchesTorch compares three steps on two tensors with torch.optim.AdamW
// (lr 0.02, wd 0.1) + LambdaLR linear decay over 5 steps; the expected numbers were
// printed by PyTorch 1.13 in float64 (no clipping: every gradient norm is below 1).
func TestMatchesTorch(t *testing.T) {
	o, err := New(Config{LR: 0.02, WeightDecay: 0.1, TotalSteps: 5})
	if err != nil {
		t.Fatal(err)
	}
	p := map[string][]float64{"a": {0.5, -1.5, 2.0}, "b": {0.25, -0.75}}
	grads := []map[string][]float64{
		{"a": {0.1, -0.2, 0.05}, "b": {0.3, 0.0}},
		{"a": {-0.05, 0.1, 0.2}, "b": {-0.1, 0.4}},
		{"a": {0.2, 0.2, -0.3}, "b": {0.05, -0.05}},
	}
	for _, g := range grads {
		o.Step(p, g)
	}
	want := map[string][]float64{
		"a": {0.4655061046432198, -1.4718833194454588, 1.958012467290217},
		"b": {0.21759692405751316, -0.7641955321380343},
	}
	for n, w := range want {
		for i := range w {
			if !near(p[n][i], w[i], 1e-14) {
				t.Errorf("%s[%d] = %.17g, torch %.17g", n, i, p[n][i], w[i])
			}
		}
	}
}

func TestClippingIsExact(t *testing.T) {
	o, err := New(Config{LR: 0.1, MaxGradNorm: 1.5, Decay: Constant})
	if err != nil {
		t.Fatal(err)
	}
	p := map[string][]float64{"x": {0, 0}, "y": {0}}
	g := map[string][]float64{"x": {3, 0}, "y": {4}} // global norm 5
	n, _ := o.Step(p, g)
	if n != 5 {
		t.Fatalf("pre-clip norm %v, want 5", n)
	}
	if g["x"][0] != 3 || g["y"][0] != 4 {
		t.Fatal("Step modified the gradients")
	}
	// m after one step is (1-b1)*clipped g.
	st := o.State()
	sq := 0.0
	for _, name := range []string{"x", "y"} {
		for _, m := range st.M[name] {
			sq += (m / 0.1) * (m / 0.1)
		}
	}
	if !near(math.Sqrt(sq), 1.5, 1e-14) {
		t.Errorf("clipped norm %.17g, want exactly 1.5", math.Sqrt(sq))
	}
	if !near(st.M["x"][0]/0.1, 3*1.5/5, 1e-15) || !near(st.M["y"][0]/0.1, 4*1.5/5, 1e-15) {
		t.Errorf("clipping must scale uniformly: %v", st.M)
	}
	// Below the bound: untouched.
	o2, _ := New(Config{LR: 0.1, MaxGradNorm: 10, Decay: Constant})
	o2.Step(map[string][]float64{"x": {0, 0}, "y": {0}}, g)
	if m := o2.State().M["y"][0]; !near(m, 0.4, 1e-15) {
		t.Errorf("unclipped m = %v, want 0.4", m)
	}
	// Disabled.
	o3, _ := New(Config{LR: 0.1, MaxGradNorm: -1, Decay: Constant})
	o3.Step(map[string][]float64{"x": {0, 0}, "y": {0}}, g)
	if m := o3.State().M["y"][0]; !near(m, 0.4, 1e-15) {
		t.Errorf("clipping disabled: m = %v, want 0.4", m)
	}
}

func TestLRSchedule(t *testing.T) {
	o, _ := New(Config{LR: 1, TotalSteps: 4})
	p := map[string][]float64{"w": {0}}
	for s, want := range []float64{1, 0.75, 0.5, 0.25, 0, 0} {
		if got := o.LRAt(s); !near(got, want, 1e-15) {
			t.Errorf("LRAt(%d) = %v, want %v", s, got, want)
		}
		if _, lr := o.Step(p, map[string][]float64{"w": {1}}); !near(lr, want, 1e-15) {
			t.Errorf("step %d used lr %v, want %v", s, lr, want)
		}
	}
	// Warm-up reaches LR at its last step (s = Warmup-1); the decay starts from LR at s = Warmup.
	w, _ := New(Config{LR: 2, TotalSteps: 6, Warmup: 2})
	for s, want := range []float64{1, 2, 2, 1.5, 1, 0.5, 0} {
		if got := w.LRAt(s); !near(got, want, 1e-15) {
			t.Errorf("warm-up LRAt(%d) = %v, want %v", s, got, want)
		}
	}
	c, _ := New(Config{LR: 3, Decay: Constant, Warmup: 1})
	if c.LRAt(0) != 3 || c.LRAt(1) != 3 || c.LRAt(1000) != 3 {
		t.Error("constant schedule")
	}
	d := DefaultConfig(5e-5, 100)
	if d.Beta1 != 0.9 || d.Beta2 != 0.999 || d.Eps != 1e-8 || d.MaxGradNorm != 1 || d.WeightDecay != 0 || d.Warmup != 0 {
		t.Errorf("DefaultConfig = %+v", d)
	}
	if o, _ := New(Config{LR: 1, TotalSteps: 3}); !reflect.DeepEqual(o.Config(), DefaultConfig(1, 3)) {
		t.Errorf("zero fields should take defaults: %+v", o.Config())
	}
	for _, bad := range []Config{{LR: -1, TotalSteps: 1}, {LR: 1}, {LR: 1, TotalSteps: 2, Warmup: 3}, {LR: 1, Beta1: 1, TotalSteps: 1},
		{LR: 1, Decay: Cosine}, {LR: 1, Decay: "step", TotalSteps: 1}, {LR: 1, TotalSteps: 1, MinLRRatio: 1.5}, {LR: 1, TotalSteps: 1, MinLRRatio: -0.1},
		{LR: 1, TotalSteps: 1, Groups: []Group{{Name: "bad", WeightDecay: -1}}}} {
		if _, err := New(bad); err == nil {
			t.Errorf("New(%+v) accepted", bad)
		}
	}
}

func params() map[string][]float64 {
	return map[string][]float64{"h.0.lora_A": {0.1, -0.2, 0.3, 0.05}, "h.0.lora_B": {0, 0}, "h.1.lora_A": {1, 2}}
}

func gradAt(step int, p map[string][]float64) map[string][]float64 {
	g := map[string][]float64{}
	for n, v := range p {
		g[n] = make([]float64, len(v))
		for i := range v {
			// A deterministic gradient that depends on the parameters and the step.
			g[n][i] = math.Sin(float64(step+1)*v[i]+float64(i)) * float64(len(n)+step)
		}
	}
	return g
}

func TestSaveRestoreContinues(t *testing.T) {
	cfg := Config{LR: 0.05, WeightDecay: 0.01, TotalSteps: 10}
	full, _ := New(cfg)
	pf := params()
	for s := 0; s < 8; s++ {
		full.Step(pf, gradAt(s, pf))
	}

	first, _ := New(cfg)
	pr := params()
	for s := 0; s < 4; s++ {
		first.Step(pr, gradAt(s, pr))
	}
	b, err := json.Marshal(first.State())
	if err != nil {
		t.Fatal(err)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	second, _ := New(cfg)
	if err := second.Restore(st); err != nil {
		t.Fatal(err)
	}
	if err := second.Check(pr); err != nil {
		t.Fatal(err)
	}
	if second.Steps() != 4 {
		t.Fatalf("restored step %d", second.Steps())
	}
	for s := 4; s < 8; s++ {
		second.Step(pr, gradAt(s, pr))
	}
	for n := range pf {
		for i := range pf[n] {
			if pf[n][i] != pr[n][i] {
				t.Errorf("%s[%d]: uninterrupted %.17g, resumed %.17g", n, i, pf[n][i], pr[n][i])
			}
		}
	}
}

func TestRestoreValidates(t *testing.T) {
	o, _ := New(Config{LR: 0.1, TotalSteps: 10})
	p := params()
	o.Step(p, gradAt(0, p))
	good := o.State()

	cases := map[string]func(s *State){
		"missing second moment": func(s *State) { delete(s.V, "h.1.lora_A"); s.V["other"] = []float64{1, 2} },
		"length mismatch":       func(s *State) { s.V["h.1.lora_A"] = []float64{1} },
		"unknown name":          func(s *State) { s.M["h.9.x"] = []float64{1}; s.V["h.9.x"] = []float64{1} },
		"wrong length vs state": func(s *State) { s.M["h.1.lora_A"] = []float64{1, 2, 3}; s.V["h.1.lora_A"] = []float64{1, 2, 3} },
		"negative step":         func(s *State) { s.Step = -1 },
		"NaN":                   func(s *State) { s.M["h.0.lora_B"][0] = math.NaN() },
	}
	for name, mutate := range cases {
		s := o.State()
		mutate(&s)
		err := o.Restore(s)
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		t.Logf("%s: %v", name, err)
	}
	// A fresh optimizer accepts any consistent state; Check then names the mismatch.
	fresh, _ := New(Config{LR: 0.1, TotalSteps: 10})
	if err := fresh.Restore(good); err != nil {
		t.Fatal(err)
	}
	bad := params()
	bad["h.0.lora_B"] = []float64{0, 0, 0}
	if err := fresh.Check(bad); err == nil || !strings.Contains(err.Error(), "h.0.lora_B") {
		t.Errorf("Check: %v", err)
	}
	delete(bad, "h.0.lora_B")
	if err := fresh.Check(bad); err == nil || !strings.Contains(err.Error(), "h.0.lora_B") {
		t.Errorf("Check missing: %v", err)
	}
	func() {
		defer func() {
			if r := recover(); r == nil {
				t.Error("Step with mismatched params did not panic")
			}
		}()
		fresh.Step(bad, gradAt(0, bad))
	}()
}
