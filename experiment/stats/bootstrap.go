package stats

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
)

// BootstrapCI is a paired difference (arm - baseline) with a percentile bootstrap interval.
type BootstrapCI struct {
	Diff      float64 `json:"diff"` // mean over seeds of the per-seed mean difference
	Lo        float64 `json:"lo"`
	Hi        float64 `json:"hi"`
	Level     float64 `json:"level"`
	Resamples int     `json:"resamples"`
	Seeds     int     `json:"seeds"`
	Prompts   int     `json:"prompts"`
	// SeedsResampled is set when the seeds were resampled too (HierarchicalBootstrap).
	SeedsResampled bool `json:"seedsResampled"`
}

// Format prints "+0.123 [+0.050, +0.190]".
func (c BootstrapCI) Format(verb string) string {
	v := "%+" + verb[1:]
	return fmt.Sprintf(v+" ["+v+", "+v+"]", c.Diff, c.Lo, c.Hi)
}

// Excludes0 reports whether the interval lies strictly on one side of zero.
func (c BootstrapCI) Excludes0() bool { return c.Lo > 0 || c.Hi < 0 }

// Bootstrap defaults of the report.
const (
	BootstrapResamples = 2000
	BootstrapSeed      = 20240617
)

// PairedBootstrap estimates the difference of means between arm a and baseline b from
// paired outcomes: a[s][i] and b[s][i] are prompt i under seed s (the same prompt, the
// same seed). Each resample draws prompts with replacement within every seed (the same
// draw for both arms, which keeps the pairing), takes each seed's mean difference and
// averages over seeds. The interval is the (1-level)/2 and (1+level)/2 percentiles of
// the resampled statistic. The RNG is seeded, so the result is deterministic.
//
// The seeds are held fixed: the interval is about these seeds' prompts, and says nothing of
// how much another seed would move the difference. Across seeds, use HierarchicalBootstrap.
func PairedBootstrap(a, b [][]float64, resamples int, level float64, seed uint64) (BootstrapCI, error) {
	return bootstrap(a, b, resamples, level, seed, false)
}

// HierarchicalBootstrap is PairedBootstrap with the seeds resampled too: each resample draws
// as many seeds as there are, with replacement, then the prompts of each drawn seed with
// replacement (the same draws for arm and baseline, which share seeds and prompts), and
// averages the drawn seeds' mean differences. Its interval carries both sources of variance:
// which prompts were evaluated, and which training seeds were run (initial adapters, data
// order, samples), so a difference that changes from seed to seed more than the prompts can
// explain gets a wide interval. With one seed there is nothing to resample across seeds and it
// is PairedBootstrap, draw for draw.
func HierarchicalBootstrap(a, b [][]float64, resamples int, level float64, seed uint64) (BootstrapCI, error) {
	return bootstrap(a, b, resamples, level, seed, true)
}

func bootstrap(a, b [][]float64, resamples int, level float64, seed uint64, seeds bool) (BootstrapCI, error) {
	if len(a) == 0 || len(a) != len(b) {
		return BootstrapCI{}, fmt.Errorf("bootstrap: %d seeds for the arm, %d for the baseline", len(a), len(b))
	}
	if resamples < 1 || level <= 0 || level >= 1 {
		return BootstrapCI{}, errors.New("bootstrap: need resamples >= 1 and 0 < level < 1")
	}
	diffs := make([][]float64, len(a))
	point := 0.0
	for s := range a {
		if len(a[s]) == 0 || len(a[s]) != len(b[s]) {
			return BootstrapCI{}, fmt.Errorf("bootstrap: seed %d has %d prompts for the arm and %d for the baseline", s, len(a[s]), len(b[s]))
		}
		d := make([]float64, len(a[s]))
		m := 0.0
		for i := range d {
			d[i] = a[s][i] - b[s][i]
			m += d[i]
		}
		diffs[s] = d
		point += m / float64(len(d))
	}
	point /= float64(len(a))
	S := len(diffs)
	rng := rand.New(rand.NewPCG(seed, 0x626f6f74))
	stats := make([]float64, resamples)
	for r := range stats {
		tot := 0.0
		for s := range S {
			k := s
			if seeds && S > 1 {
				k = rng.IntN(S) // the seed drawn for slot s
			}
			d := diffs[k]
			n := len(d)
			m := 0.0
			for range n {
				m += d[rng.IntN(n)]
			}
			tot += m / float64(n)
		}
		stats[r] = tot / float64(S)
	}
	sort.Float64s(stats)
	return BootstrapCI{
		Diff: point, Lo: quantile(stats, (1-level)/2), Hi: quantile(stats, (1+level)/2),
		Level: level, Resamples: resamples, Seeds: len(a), Prompts: len(a[0]), SeedsResampled: seeds && S > 1,
	}, nil
}

// quantile of sorted xs with linear interpolation between order statistics.
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 1 {
		return xs[0]
	}
	pos := q * float64(len(xs)-1)
	lo := int(math.Floor(pos))
	hi := min(lo+1, len(xs)-1)
	f := pos - float64(lo)
	return xs[lo]*(1-f) + xs[hi]*f
}
