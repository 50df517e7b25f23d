package pipeline

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
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

// BootstrapCI is a paired difference (arm - baseline) with a percentile bootstrap interval.
type BootstrapCI struct {
	Diff      float64 `json:"diff"` // mean over seeds of the per-seed mean difference
	Lo        float64 `json:"lo"`
	Hi        float64 `json:"hi"`
	Level     float64 `json:"level"`
	Resamples int     `json:"resamples"`
	Seeds     int     `json:"seeds"`
	Prompts   int     `json:"prompts"`
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
func PairedBootstrap(a, b [][]float64, resamples int, level float64, seed uint64) (BootstrapCI, error) {
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
	rng := rand.New(rand.NewPCG(seed, 0x626f6f74))
	stats := make([]float64, resamples)
	for r := range stats {
		tot := 0.0
		for _, d := range diffs {
			n := len(d)
			m := 0.0
			for range n {
				m += d[rng.IntN(n)]
			}
			tot += m / float64(n)
		}
		stats[r] = tot / float64(len(diffs))
	}
	sort.Float64s(stats)
	return BootstrapCI{
		Diff: point, Lo: quantile(stats, (1-level)/2), Hi: quantile(stats, (1+level)/2),
		Level: level, Resamples: resamples, Seeds: len(a), Prompts: len(a[0]),
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

// KLPoint is one evaluation of a run: KL to the initial model and the gold reward.
type KLPoint struct {
	KL     float64 `json:"kl"`
	Reward float64 `json:"reward"`
	// perPrompt is the evaluation's mean sample reward per prompt (Reward is their mean), for
	// a paired bootstrap at matched KL; nil when the evaluation did not record it.
	perPrompt []float64
}

// Frontier is the reward-KL frontier of a set of evaluations: the upper concave envelope
// of the points, cut at the highest reward and flat from there to the largest KL seen.
// Read as "the best reward reachable within a KL budget": a mixture of two policies reaches
// the straight line between them in reward with at most that KL (KL is convex), and a larger
// budget never forces a lower reward. It is piecewise linear through its vertices, defined on
// [smallest KL, largest KL] of the points; there is no extrapolation.
func Frontier(pts []KLPoint) []KLPoint {
	var ps []KLPoint
	for _, p := range pts {
		if !math.IsNaN(p.KL) && !math.IsNaN(p.Reward) && !math.IsInf(p.KL, 0) && !math.IsInf(p.Reward, 0) {
			ps = append(ps, p)
		}
	}
	if len(ps) == 0 {
		return nil
	}
	sort.Slice(ps, func(i, j int) bool {
		if ps[i].KL != ps[j].KL {
			return ps[i].KL < ps[j].KL
		}
		return ps[i].Reward > ps[j].Reward
	})
	maxKL := ps[len(ps)-1].KL
	// Upper hull, left to right (Andrew's monotone chain); equal KLs keep the best reward.
	var hull []KLPoint
	for i, p := range ps {
		if i > 0 && p.KL == ps[i-1].KL {
			continue
		}
		for len(hull) >= 2 {
			o, a := hull[len(hull)-2], hull[len(hull)-1]
			// Drop a when it lies on or below the segment o -> p.
			if (a.KL-o.KL)*(p.Reward-o.Reward)-(a.Reward-o.Reward)*(p.KL-o.KL) >= 0 {
				hull = hull[:len(hull)-1]
				continue
			}
			break
		}
		hull = append(hull, p)
	}
	// Cut at the best reward; beyond it the frontier is flat.
	best := 0
	for i, p := range hull {
		if p.Reward > hull[best].Reward {
			best = i
		}
	}
	hull = hull[:best+1]
	if maxKL > hull[best].KL {
		hull = append(hull, KLPoint{KL: maxKL, Reward: hull[best].Reward, perPrompt: hull[best].perPrompt})
	}
	return hull
}

// FrontierAt reads a frontier at KL x by linear interpolation; ok is false outside its domain.
func FrontierAt(front []KLPoint, x float64) (float64, bool) {
	a, b, f, ok := frontierSegment(front, x)
	if !ok {
		return math.NaN(), false
	}
	return a.Reward + f*(b.Reward-a.Reward), true
}

// FrontierPerPrompt reads a frontier at KL x prompt by prompt: the same interpolation between
// the same two evaluations as FrontierAt, applied to their per-prompt rewards (so the mean of
// the result is FrontierAt's value). ok is false outside the domain or when an evaluation
// involved has no per-prompt rewards.
func FrontierPerPrompt(front []KLPoint, x float64) ([]float64, bool) {
	a, b, f, ok := frontierSegment(front, x)
	if !ok || a.perPrompt == nil || b.perPrompt == nil || len(a.perPrompt) != len(b.perPrompt) {
		return nil, false
	}
	out := make([]float64, len(a.perPrompt))
	for i := range out {
		out[i] = a.perPrompt[i] + f*(b.perPrompt[i]-a.perPrompt[i])
	}
	return out, true
}

// frontierSegment finds the frontier's value at x as a + f·(b - a) between two of its points
// (a == b, f = 0 at a vertex); ok is false outside the domain.
func frontierSegment(front []KLPoint, x float64) (a, b KLPoint, f float64, ok bool) {
	if len(front) == 0 || x < front[0].KL || x > front[len(front)-1].KL || math.IsNaN(x) {
		return a, b, 0, false
	}
	for i := 1; i < len(front); i++ {
		a, b = front[i-1], front[i]
		if x <= b.KL {
			if b.KL == a.KL {
				if b.Reward > a.Reward {
					a = b
				}
				return a, a, 0, true
			}
			return a, b, (x - a.KL) / (b.KL - a.KL), true
		}
	}
	last := front[len(front)-1]
	return last, last, 0, true
}

// MaxKL is the largest KL of a frontier (the end of its domain).
func MaxKL(front []KLPoint) float64 {
	if len(front) == 0 {
		return math.NaN()
	}
	return front[len(front)-1].KL
}
