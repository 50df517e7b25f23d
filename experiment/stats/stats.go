// Package stats holds the pure statistics of experiment reports: means and standard deviations
// over seeds, bootstrap intervals, and reward-KL frontiers. It imports nothing of the project.
package stats

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/stat/distuv"
)

// Stat is a mean and sample standard deviation over N values (seeds).
type Stat struct {
	Mean float64 `json:"mean"`
	Std  float64 `json:"std"` // sample standard deviation (n-1); 0 when N < 2
	N    int     `json:"n"`
}

// MeanStd is the mean and the sample standard deviation (n-1 denominator) of xs.
func MeanStd(xs []float64) Stat {
	n := len(xs)
	if n == 0 {
		return Stat{Mean: math.NaN(), Std: math.NaN()}
	}
	m := 0.0
	for _, x := range xs {
		m += x
	}
	m /= float64(n)
	if n < 2 {
		return Stat{Mean: m, N: n}
	}
	ss := 0.0
	for _, x := range xs {
		ss += (x - m) * (x - m)
	}
	return Stat{Mean: m, Std: math.Sqrt(ss / float64(n-1)), N: n}
}

// Format prints "mean ± std" with the given verb (e.g. "%.3f"); just the mean for one value.
func (s Stat) Format(verb string) string {
	switch {
	case s.N == 0 || math.IsNaN(s.Mean):
		return "–"
	case s.N == 1:
		return fmt.Sprintf(verb, s.Mean)
	}
	return fmt.Sprintf(verb+" ± "+verb, s.Mean, s.Std)
}

// NextSeed is the two-sided prediction interval, at the given level (e.g. 0.95), for the value
// one more seed would give, assuming seeds' values are normal: mean ± t(level, N-1) · std ·
// sqrt(1 + 1/N). It is the spread a re-run on a seed never used should land in, wider than a
// confidence interval for the mean because a new seed carries its own variation. ok is false
// with fewer than 2 values (no spread to predict from).
func (s Stat) NextSeed(level float64) (lo, hi float64, ok bool) {
	if s.N < 2 || math.IsNaN(s.Mean) || math.IsNaN(s.Std) {
		return math.NaN(), math.NaN(), false
	}
	t := distuv.StudentsT{Mu: 0, Sigma: 1, Nu: float64(s.N - 1)}.Quantile(0.5 + level/2)
	half := t * s.Std * math.Sqrt(1+1/float64(s.N))
	return s.Mean - half, s.Mean + half, true
}

// FormatNextSeed prints NextSeed(0.95) as "[lo, hi]" with the given verb, "–" without one.
func (s Stat) FormatNextSeed(verb string) string {
	lo, hi, ok := s.NextSeed(0.95)
	if !ok {
		return "–"
	}
	return fmt.Sprintf("["+verb+", "+verb+"]", lo, hi)
}
