package stats

import (
	"math"
	"testing"
)

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

func pt(kl, r float64) KLPoint { return KLPoint{KL: kl, Reward: r} }

func samePt(a, b KLPoint) bool { return a.KL == b.KL && a.Reward == b.Reward }

func TestSupported(t *testing.T) {
	for _, c := range []struct {
		name    string
		trained []float64
		x, band float64
		want    bool
	}{
		{"at a trained point", []float64{1}, 1, 0.5, true},
		{"one point: anywhere else is outside its range", []float64{1}, 1.2, 0.5, false},
		{"below the smallest trained KL (a mixture with the initial model)", []float64{0.5, 2}, 0.45, 0.5, false},
		{"above the largest (extrapolation)", []float64{0.5, 2}, 2.1, 0.5, false},
		{"inside, near the lower point", []float64{0.5, 2}, 0.9, 0.5, true},
		{"inside, near the upper point", []float64{0.5, 2}, 1.6, 0.5, true},
		{"in the middle of a gap wider than the band", []float64{0.5, 2}, 1.25, 0.5, false},
		{"edge of the band counts", []float64{0.5, 2}, 1.0, 0.5, true},
		{"a denser frontier covers the gap", []float64{0.5, 1.2, 2}, 1.25, 0.5, true},
		{"unsorted input", []float64{2, 0.5, 1.2}, 1.7, 0.5, true},
		{"no trained point", nil, 1, 0.5, false},
		{"NaN KL", []float64{1}, math.NaN(), 0.5, false},
		{"zero band: exact points only", []float64{1, 2}, 1.5, 0, false},
	} {
		if got := Supported(c.trained, c.x, c.band); got != c.want {
			t.Errorf("%s: Supported(%v, %g, %g) = %v, want %v", c.name, c.trained, c.x, c.band, got, c.want)
		}
	}
}
