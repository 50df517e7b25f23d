package loss

import (
	"math"
	"strings"
	"testing"

	"gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// evalNode runs Node on the given values and returns the loss and d loss/d pc, d pr.
func evalNode(t *testing.T, kind Kind, beta float64, pc, pr, rc, rr []float64) (float64, []float64, []float64) {
	t.Helper()
	g := gorgonia.NewGraph()
	vec := func(name string, v []float64) *gorgonia.Node {
		return gorgonia.NewVector(g, gorgonia.Float64, gorgonia.WithShape(len(v)), gorgonia.WithName(name),
			gorgonia.WithValue(tensor.New(tensor.WithShape(len(v)), tensor.WithBacking(append([]float64(nil), v...)))))
	}
	npc, npr, nrc, nrr := vec("pc", pc), vec("pr", pr), vec("rc", rc), vec("rr", rr)
	l, err := Node(kind, beta, npc, npr, nrc, nrr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gorgonia.Grad(l, npc, npr); err != nil {
		t.Fatal(err)
	}
	vm := gorgonia.NewTapeMachine(g)
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	defer vm.Reset()
	gv := func(n *gorgonia.Node) []float64 {
		d, err := n.Grad()
		if err != nil {
			t.Fatal(err)
		}
		return append([]float64(nil), d.Data().([]float64)...)
	}
	return l.Value().Data().(float64), gv(npc), gv(npr)
}

func TestParseKind(t *testing.T) {
	for in, want := range map[string]Kind{"DPO": DPO, "ipo": IPO, "SLiC": SLiC, " slic ": SLiC, "Dpo": DPO} {
		if got, err := ParseKind(in); err != nil || got != want {
			t.Errorf("ParseKind(%q) = %q, %v", in, got, err)
		}
	}
	_, err := ParseKind("kto")
	if err == nil || !strings.Contains(err.Error(), "dpo, ipo, slic") {
		t.Errorf("ParseKind(kto) error %v should list the valid kinds", err)
	}
	if _, _, err := func() (a, b any, err error) {
		_, err = Node("kto", 0.1, nil, nil, nil, nil)
		return
	}(); err == nil {
		t.Error("Node accepted an unknown kind")
	}
}

func TestHandComputedValues(t *testing.T) {
	beta := 0.1
	zero := []float64{-3, -7}
	// h = 0: policy == reference.
	for _, c := range []struct {
		kind Kind
		want float64
	}{{DPO, math.Ln2}, {IPO, 25}, {SLiC, 1}} {
		m, per := Values(c.kind, beta, zero, []float64{-5, -1}, zero, []float64{-5, -1})
		if math.Abs(m-c.want) > 1e-15 || len(per) != 2 {
			t.Errorf("%s at h=0: %v, want %v", c.kind, m, c.want)
		}
		got, _, _ := evalNode(t, c.kind, beta, zero, []float64{-5, -1}, zero, []float64{-5, -1})
		if math.Abs(got-c.want) > 1e-15 {
			t.Errorf("Node %s at h=0: %v, want %v", c.kind, got, c.want)
		}
	}
	// One pair with h = (-2 - -4) - (-6 - -5) = 3, beta = 0.5: beta*h = 1.5.
	pc, pr, rc, rr := []float64{-2}, []float64{-6}, []float64{-4}, []float64{-5}
	want := map[Kind]float64{
		DPO:  math.Log(1 + math.Exp(-1.5)), // 0.20141327798275246
		IPO:  (3 - 1.0) * (3 - 1.0),        // (h - 1/(2*0.5))^2 = 4
		SLiC: 0,                            // max(0, 1 - 1.5)
	}
	for k, w := range want {
		m, _ := Values(k, 0.5, pc, pr, rc, rr)
		if math.Abs(m-w) > 1e-15 {
			t.Errorf("%s: %v want %v", k, m, w)
		}
	}
	if m, _ := Values(DPO, 0.5, pc, pr, rc, rr); math.Abs(m-0.20141327798275246) > 1e-15 {
		t.Errorf("DPO literal: %v", m)
	}
	// SLiC inside the margin: h = 1, beta 0.5 -> 0.5.
	if m, _ := Values(SLiC, 0.5, []float64{0}, []float64{-1}, []float64{0}, []float64{0}); m != 0.5 {
		t.Errorf("SLiC h=1: %v", m)
	}
}

// TestLengthRegularisation: with the shifted reference, every loss sees beta*h + alpha*(|y_w| -
// |y_l|), computed by hand: one pair with h = 3 (as above), beta 0.5, alpha 0.1, a chosen response
// of 12 tokens and a rejected one of 2: beta*h' = 1.5 + 0.1*10 = 2.5, h' = 5.
func TestLengthRegularisation(t *testing.T) {
	pc, pr, rc, rr := []float64{-2}, []float64{-6}, []float64{-4}, []float64{-5}
	rc2 := ShiftReference(rc, []int{12}, 0.1, 0.5)
	rr2 := ShiftReference(rr, []int{2}, 0.1, 0.5)
	if rc2[0] != -4-2.4 || rr2[0] != -5-0.4 {
		t.Fatalf("shifted reference %v %v, want -6.4 -5.4", rc2, rr2)
	}
	want := map[Kind]float64{
		DPO:  math.Log(1 + math.Exp(-2.5)),
		IPO:  (5 - 1.0) * (5 - 1.0),
		SLiC: 0,
	}
	for k, w := range want {
		if m, _ := Values(k, 0.5, pc, pr, rc2, rr2); math.Abs(m-w) > 1e-14 {
			t.Errorf("%s: %v, want %v", k, m, w)
		}
		if got, _, _ := evalNode(t, k, 0.5, pc, pr, rc2, rr2); math.Abs(got-w) > 1e-14 {
			t.Errorf("Node %s: %v, want %v", k, got, w)
		}
	}
	// A longer rejected response: the term works against it (SLiC: 1 - (1.5 - 1) = 0.5).
	if m, _ := Values(SLiC, 0.5, pc, pr, ShiftReference(rc, []int{2}, 0.1, 0.5), ShiftReference(rr, []int{12}, 0.1, 0.5)); math.Abs(m-0.5) > 1e-14 {
		t.Errorf("SLiC, rejected longer: %v, want 0.5", m)
	}
	if got := ShiftReference(rc, []int{12}, 0, 0.5); &got[0] != &rc[0] {
		t.Errorf("alpha 0 should return the reference itself")
	}
}

func TestStabilityLargeMargins(t *testing.T) {
	beta := 1.0
	pc := []float64{0, 0, -1e4, -1e6}
	pr := []float64{-2000, 2000, 0, 0}
	rc := make([]float64, 4)
	rr := make([]float64, 4)
	for _, k := range Kinds {
		m, per := Values(k, beta, pc, pr, rc, rr)
		lv, gc, gr := evalNode(t, k, beta, pc, pr, rc, rr)
		for _, v := range append(append(append([]float64{m, lv}, per...), gc...), gr...) {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				t.Fatalf("%s: non-finite value in %v %v %v %v %v", k, m, lv, per, gc, gr)
			}
		}
		if math.Abs(lv-m) > 1e-12*math.Max(1, math.Abs(m)) {
			t.Errorf("%s: Node %v != Values %v", k, lv, m)
		}
	}
	_, per := Values(DPO, beta, pc, pr, rc, rr)
	if per[0] != 0 && per[0] > 1e-300 || per[1] != 2000 || per[3] != 1e6 {
		t.Errorf("DPO asymptotics: %v", per)
	}
	_, gc, _ := evalNode(t, DPO, beta, pc, pr, rc, rr)
	// d/dpc_i of mean softplus(-h) = -sigmoid(-h_i)/P.
	if gc[0] != -0 && math.Abs(gc[0]) > 1e-300 || math.Abs(gc[1]+0.25) > 1e-15 {
		t.Errorf("DPO gradient asymptotics: %v", gc)
	}
}

var gcCases = struct{ pc, pr, rc, rr []float64 }{
	pc: []float64{-12.5, -30.25, -4.0, -18.0, -9.0},
	pr: []float64{-14.0, -29.0, -6.5, -18.0, -2.0},
	rc: []float64{-13.0, -31.0, -4.0, -17.5, -8.0},
	rr: []float64{-13.5, -30.0, -6.0, -18.5, -4.0},
}

func TestNodeEqualsValues(t *testing.T) {
	c := gcCases
	for _, beta := range []float64{0.1, 0.5, 2} {
		for _, k := range Kinds {
			m, _ := Values(k, beta, c.pc, c.pr, c.rc, c.rr)
			lv, _, _ := evalNode(t, k, beta, c.pc, c.pr, c.rc, c.rr)
			if math.Abs(lv-m) > 1e-13*math.Max(1, math.Abs(m)) {
				t.Errorf("%s beta %g: Node %.17g != Values %.17g", k, beta, lv, m)
			}
		}
	}
}

// TestGradientCheck compares Node's gradients with central finite differences of Values.
func TestGradientCheck(t *testing.T) {
	c := gcCases
	for _, beta := range []float64{0.1, 0.5, 3} { // beta 3 puts SLiC pairs 0 and 2 in the flat region
		for _, k := range Kinds {
			_, gc, gr := evalNode(t, k, beta, c.pc, c.pr, c.rc, c.rr)
			worst := 0.0
			for which, in := range [][]float64{c.pc, c.pr} {
				analytic := [][]float64{gc, gr}[which]
				for i := range in {
					eps := 1e-5
					x := append([]float64(nil), in...)
					x[i] = in[i] + eps
					args := [][]float64{c.pc, c.pr}
					args[which] = x
					fp, _ := Values(k, beta, args[0], args[1], c.rc, c.rr)
					x[i] = in[i] - eps
					fm, _ := Values(k, beta, args[0], args[1], c.rc, c.rr)
					num := (fp - fm) / (2 * eps)
					rel := math.Abs(num-analytic[i]) / math.Max(1e-8, math.Max(math.Abs(num), math.Abs(analytic[i])))
					if num == 0 && analytic[i] == 0 {
						rel = 0
					}
					worst = math.Max(worst, rel)
					if rel > 1e-6 {
						t.Errorf("%s beta %g d/d%s[%d]: analytic %.12g numeric %.12g rel %.3g",
							k, beta, []string{"pc", "pr"}[which], i, analytic[i], num, rel)
					}
				}
			}
			t.Logf("%-4s beta=%.1f  max relative error vs finite differences: %.3g", k, beta, worst)
		}
	}
	// At h = 0 (every phase start) the DPO gradient is exactly -beta/2/P per pc entry.
	zero := []float64{-3, -7}
	_, gc, gr := evalNode(t, DPO, 0.1, zero, zero, zero, zero)
	for i := range gc {
		if math.Abs(gc[i]+0.1/2/2) > 1e-17 || math.Abs(gr[i]-0.1/2/2) > 1e-17 {
			t.Errorf("DPO gradient at h=0: %v %v, want ∓0.025", gc, gr)
		}
	}
}

func TestDiagnostics(t *testing.T) {
	beta := 0.1
	pc := []float64{-10, -20, -5}
	pr := []float64{-12, -18, -5}
	rc := []float64{-11, -20, -6}
	rr := []float64{-11, -19, -6}
	// chosen rewards 0.1, 0, 0.1; rejected -0.1, 0.1, 0.1; margins 0.2, -0.1, 0.
	s := Diagnostics(beta, pc, pr, rc, rr)
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-12 }
	if !near(s.RewardsChosen, 0.2/3) || !near(s.RewardsRejected, 0.1/3) || !near(s.Margin, 0.1/3) ||
		!near(s.Accuracy, 1.0/3) || s.N != 3 {
		t.Errorf("Diagnostics = %+v", s)
	}
	if got := KLEstimate([]float64{-1, -2, -3}, []float64{-1.5, -2, -2}); !near(got, (0.5+0-1)/3) {
		t.Errorf("KLEstimate = %v", got)
	}
	if (Diagnostics(beta, nil, nil, nil, nil) != Stats{}) || KLEstimate(nil, nil) != 0 {
		t.Error("empty input")
	}
}
