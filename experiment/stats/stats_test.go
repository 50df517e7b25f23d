package stats

import (
	"math"
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
