package stats

import (
	"math"
	"math/rand/v2"
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

func TestNextSeed(t *testing.T) {
	// Hand-computed: values 1, 2, 3 -> mean 2, std 1, t(0.975, 2) = 4.302653, sqrt(1 + 1/3) = 1.154701:
	// half-width 4.968275.
	s := MeanStd([]float64{1, 2, 3})
	lo, hi, ok := s.NextSeed(0.95)
	if !ok || !near(lo, 2-4.968275, 1e-5) || !near(hi, 2+4.968275, 1e-5) {
		t.Fatalf("NextSeed = %v, %v, %v", lo, hi, ok)
	}
	if got := s.FormatNextSeed("%.2f"); got != "[-2.97, 6.97]" {
		t.Fatalf("FormatNextSeed = %q", got)
	}
	// Five seeds: t(0.975, 4) = 2.776445, sqrt(1.2) = 1.095445.
	s5 := Stat{Mean: 0.3, Std: 0.04, N: 5}
	if lo, hi, _ := s5.NextSeed(0.95); !near(hi-lo, 2*2.776445*1.095445*0.04, 1e-6) {
		t.Fatalf("five seeds: width %v", hi-lo)
	}
	// Coverage on normal draws: a new draw lands inside the interval of n earlier ones 95% of the time.
	rng := rand.New(rand.NewPCG(1, 2))
	in, trials := 0, 20000
	for range trials {
		xs := make([]float64, 3)
		for i := range xs {
			xs[i] = rng.NormFloat64()
		}
		lo, hi, _ := MeanStd(xs).NextSeed(0.95)
		if x := rng.NormFloat64(); x >= lo && x <= hi {
			in++
		}
	}
	if c := float64(in) / float64(trials); c < 0.94 || c > 0.96 {
		t.Fatalf("coverage %.3f, want 0.95", c)
	}
	if _, _, ok := MeanStd([]float64{1}).NextSeed(0.95); ok {
		t.Fatal("one value has no spread to predict from")
	}
	if MeanStd([]float64{1}).FormatNextSeed("%.2f") != "–" {
		t.Fatal("one value should print –")
	}
}
