// Package stats holds the pure statistics of experiment reports: means and standard deviations
// over seeds, bootstrap intervals, and reward-KL frontiers. It imports nothing of the project.
package stats

import (
	"fmt"
	"math"
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
