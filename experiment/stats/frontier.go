package stats

import (
	"math"
	"sort"
)

// KLPoint is one evaluation of a run: KL to the initial model and the gold reward.
type KLPoint struct {
	KL     float64 `json:"kl"`
	Reward float64 `json:"reward"`
	// PerPrompt is the evaluation's mean sample reward per prompt (Reward is their mean), for
	// a paired bootstrap at matched KL; nil when the evaluation did not record it.
	PerPrompt []float64 `json:"-"`
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
		hull = append(hull, KLPoint{KL: maxKL, Reward: hull[best].Reward, PerPrompt: hull[best].PerPrompt})
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
	if !ok || a.PerPrompt == nil || b.PerPrompt == nil || len(a.PerPrompt) != len(b.PerPrompt) {
		return nil, false
	}
	out := make([]float64, len(a.PerPrompt))
	for i := range out {
		out[i] = a.PerPrompt[i] + f*(b.PerPrompt[i]-a.PerPrompt[i])
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

// DefaultKLBand is the band (nats/sequence) of Supported when an experiment file gives none.
const DefaultKLBand = 0.5

// Supported reports whether a frontier may be read at KL x: x lies inside the range of the
// trained points' KLs (no extrapolation) and within band of one of them (no reading in the
// middle of a gap wider than 2·band, where the frontier is a straight line between two runs and
// no trained policy was measured). trained are the KLs of the evaluations after training (the
// initial model's point at KL 0 is not one: a segment from it to the first trained point is a
// mixture with the initial model, not a policy anyone trained).
func Supported(trained []float64, x, band float64) bool {
	if len(trained) == 0 || math.IsNaN(x) || !(band >= 0) {
		return false
	}
	lo, hi, near := math.Inf(1), math.Inf(-1), false
	for _, k := range trained {
		lo, hi = math.Min(lo, k), math.Max(hi, k)
		if math.Abs(k-x) <= band {
			near = true
		}
	}
	return near && lo <= x && x <= hi
}
