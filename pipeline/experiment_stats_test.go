package pipeline

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"
)

func near(a, b, tol float64) bool { return math.Abs(a-b) <= tol }

func TestMeanStd(t *testing.T) {
	s := MeanStd([]float64{2, 4, 4, 4, 5, 5, 7, 9})
	// Sample standard deviation: sum of squares 32 over n-1 = 7.
	if s.N != 8 || s.Mean != 5 || !near(s.Std, math.Sqrt(32.0/7), 1e-12) {
		t.Fatalf("MeanStd = %+v", s)
	}
	if got := s.Format("%.2f"); got != "5.00 ± 2.14" {
		t.Fatalf("Format = %q", got)
	}
	one := MeanStd([]float64{0.25})
	if one.Mean != 0.25 || one.Std != 0 || one.N != 1 || one.Format("%.2f") != "0.25" {
		t.Fatalf("one value: %+v %q", one, one.Format("%.2f"))
	}
	none := MeanStd(nil)
	if !math.IsNaN(none.Mean) || none.N != 0 || none.Format("%.2f") != "–" {
		t.Fatalf("no values: %+v", none)
	}
}

// synthetic makes paired outcomes: baseline b ~ N(0, 1) per prompt (prompt difficulty shared by
// both arms), arm a = b + diff + N(0, noise).
func synthetic(rng *rand.Rand, seeds, prompts int, diff, noise float64) (a, b [][]float64) {
	for range seeds {
		as, bs := make([]float64, prompts), make([]float64, prompts)
		for i := range bs {
			bs[i] = rng.NormFloat64()
			as[i] = bs[i] + diff + noise*rng.NormFloat64()
		}
		a, b = append(a, as), append(b, bs)
	}
	return a, b
}

func TestPairedBootstrapKnownDifference(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	a, b := synthetic(rng, 3, 200, 0.3, 0.5)
	ci, err := PairedBootstrap(a, b, 2000, 0.95, BootstrapSeed)
	if err != nil {
		t.Fatal(err)
	}
	if !(ci.Lo < 0.3 && 0.3 < ci.Hi) || !ci.Excludes0() || ci.Lo > ci.Diff || ci.Diff > ci.Hi {
		t.Fatalf("95%% CI %+v should cover the true difference 0.3 and exclude 0", ci)
	}
	// The standard error of the mean difference is 0.5/sqrt(600) = 0.020: the interval is about ±0.04.
	if w := ci.Hi - ci.Lo; w < 0.05 || w > 0.11 {
		t.Fatalf("CI width %.3f, want about 0.08", w)
	}
	if ci.Seeds != 3 || ci.Prompts != 200 || ci.Resamples != 2000 {
		t.Fatalf("metadata: %+v", ci)
	}
	// Deterministic: the same inputs give the same interval bit for bit.
	again, _ := PairedBootstrap(a, b, 2000, 0.95, BootstrapSeed)
	if again != ci {
		t.Fatalf("not deterministic: %+v vs %+v", ci, again)
	}
	other, _ := PairedBootstrap(a, b, 2000, 0.95, BootstrapSeed+1)
	if other == ci {
		t.Fatal("the RNG seed is ignored")
	}
}

func TestPairedBootstrapUsesThePairing(t *testing.T) {
	// Prompts vary a lot, the arm is exactly 0.1 better on every prompt: a paired interval is
	// [0.1, 0.1]; an unpaired one would be about ±0.2 wide.
	rng := rand.New(rand.NewPCG(5, 6))
	a, b := synthetic(rng, 2, 100, 0.1, 0)
	ci, err := PairedBootstrap(a, b, 500, 0.95, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !near(ci.Lo, 0.1, 1e-9) || !near(ci.Hi, 0.1, 1e-9) || !near(ci.Diff, 0.1, 1e-9) {
		t.Fatalf("paired CI %+v, want exactly 0.1", ci)
	}
}

func TestPairedBootstrapCoverage(t *testing.T) {
	// Over many synthetic experiments with a known difference, the 95% interval covers it
	// about 95% of the time (percentile bootstrap with 2 seeds x 60 prompts).
	rng := rand.New(rand.NewPCG(7, 8))
	const trials = 200
	covered := 0
	for i := range trials {
		a, b := synthetic(rng, 2, 60, -0.2, 1)
		ci, err := PairedBootstrap(a, b, 400, 0.95, uint64(i))
		if err != nil {
			t.Fatal(err)
		}
		if ci.Lo <= -0.2 && -0.2 <= ci.Hi {
			covered++
		}
	}
	if rate := float64(covered) / trials; rate < 0.89 || rate > 0.99 {
		t.Fatalf("coverage %.3f, want about 0.95", rate)
	}
}

func TestPairedBootstrapErrors(t *testing.T) {
	if _, err := PairedBootstrap([][]float64{{1, 2}}, [][]float64{{1}}, 10, 0.95, 1); err == nil {
		t.Fatal("different prompt counts must be an error")
	}
	if _, err := PairedBootstrap([][]float64{{1}}, nil, 10, 0.95, 1); err == nil {
		t.Fatal("different seed counts must be an error")
	}
	if _, err := PairedBootstrap([][]float64{{1}}, [][]float64{{1}}, 0, 0.95, 1); err == nil {
		t.Fatal("zero resamples must be an error")
	}
}

func TestFrontier(t *testing.T) {
	pts := []KLPoint{
		pt(0, 0), pt(0.5, 0.2), // below the segment (0,0)-(1,1)
		pt(1, 1), pt(1.5, 0.5), // below
		pt(2, 1.2), pt(3, 1.1), // past the best reward: the frontier goes flat to KL 3
		pt(math.NaN(), 5), // ignored
	}
	front := Frontier(pts)
	want := []KLPoint{pt(0, 0), pt(1, 1), pt(2, 1.2), pt(3, 1.2)}
	if len(front) != len(want) {
		t.Fatalf("frontier %v, want %v", front, want)
	}
	for i := range want {
		if !samePt(front[i], want[i]) {
			t.Fatalf("frontier %v, want %v", front, want)
		}
	}
	for _, c := range []struct {
		x, want float64
		ok      bool
	}{
		{0, 0, true}, {0.5, 0.5, true}, {1, 1, true}, {1.5, 1.1, true}, {2.5, 1.2, true}, {3, 1.2, true},
		{3.01, 0, false}, {-0.1, 0, false}, // no extrapolation
	} {
		got, ok := FrontierAt(front, c.x)
		if ok != c.ok || (ok && !near(got, c.want, 1e-12)) {
			t.Errorf("FrontierAt(%g) = %g, %v; want %g, %v", c.x, got, ok, c.want, c.ok)
		}
	}
	if MaxKL(front) != 3 {
		t.Fatalf("MaxKL = %g", MaxKL(front))
	}
}

func TestFrontierEdgeCases(t *testing.T) {
	// A dip is bridged by the concave envelope.
	f := Frontier([]KLPoint{pt(2, 1), pt(0, 0), pt(1, 0.2)})
	if len(f) != 2 || !samePt(f[0], pt(0, 0)) || !samePt(f[1], pt(2, 1)) {
		t.Fatalf("dip: %v", f)
	}
	// Equal KLs keep the better reward; collinear points are not vertices.
	f = Frontier([]KLPoint{pt(0, 0), pt(1, 0.3), pt(1, 0.5), pt(2, 1)})
	if len(f) != 2 || !samePt(f[1], pt(2, 1)) {
		t.Fatalf("collinear/duplicate: %v", f)
	}
	// Training that only lost reward: the frontier is the initial point, flat to the max KL.
	f = Frontier([]KLPoint{pt(0, 0.4), pt(1, 0.1), pt(2, -0.3)})
	if len(f) != 2 || !samePt(f[0], pt(0, 0.4)) || !samePt(f[1], pt(2, 0.4)) {
		t.Fatalf("decreasing: %v", f)
	}
	// A single point is a frontier of one KL.
	f = Frontier([]KLPoint{pt(0, 0.4)})
	if v, ok := FrontierAt(f, 0); !ok || v != 0.4 {
		t.Fatalf("single point: %v %v %v", f, v, ok)
	}
	// A slightly negative KL estimate starts the domain below 0.
	f = Frontier([]KLPoint{pt(0, 0), pt(-0.01, 0.1), pt(1, 1)})
	if v, ok := FrontierAt(f, 0); !ok || v <= 0.1 {
		t.Fatalf("negative KL: %v at 0 = %v", f, v)
	}
	if Frontier(nil) != nil {
		t.Fatal("empty input")
	}
}

func TestJSONSafeWritesNaNAsNull(t *testing.T) {
	type inner struct {
		Std  float64 `json:"std"`
		Skip float64 `json:"-"`
	}
	v := struct {
		Mean  float64            `json:"mean"`
		In    []inner            `json:"in"`
		By    map[string]float64 `json:"by,omitempty"`
		Empty string             `json:"empty,omitempty"`
	}{Mean: 0.5, In: []inner{{Std: math.NaN()}}, By: map[string]float64{"x": math.Inf(1)}}
	data, err := json.Marshal(jsonSafe(reflect.ValueOf(v)))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(data), `{"by":{"x":null},"in":[{"std":null}],"mean":0.5}`; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func pt(kl, r float64) KLPoint { return KLPoint{KL: kl, Reward: r} }

func samePt(a, b KLPoint) bool { return a.KL == b.KL && a.Reward == b.Reward }
