package experiment

import (
	"fmt"
	"math"
	"slices"

	"github.com/bpo-dev/bpo/experiment/stats"
	"github.com/bpo-dev/bpo/pipeline"
)

func statOf(runs []*expRun, f func(*expRun) float64) stats.Stat {
	xs := make([]float64, 0, len(runs))
	for _, r := range runs {
		if v := f(r); !math.IsNaN(v) {
			xs = append(xs, v)
		}
	}
	return stats.MeanStd(xs)
}

func fillArmStats(st *ArmStats) {
	rs := st.runs
	fin := func(f func(*EvalRecord) float64) stats.Stat {
		return statOf(rs, func(r *expRun) float64 { return f(r.final()) })
	}
	st.WinRate = fin(func(e *EvalRecord) float64 { return e.WinRate })
	st.HeldOutWinRate = fin(func(e *EvalRecord) float64 { return e.HeldOutWinRate })
	st.GoldReward = fin(func(e *EvalRecord) float64 { return e.GoldReward })
	st.GreedyReward = fin(func(e *EvalRecord) float64 { return e.GreedyReward })
	st.HeldOutReward = fin(func(e *EvalRecord) float64 { return e.HeldOutReward })
	st.RefTieRate = fin(func(e *EvalRecord) float64 { return e.TieRate })
	st.KL = fin(func(e *EvalRecord) float64 { return e.KLToInitial })
	st.MeanLength = fin(func(e *EvalRecord) float64 { return e.MeanLength })
	st.Distinct1 = fin(func(e *EvalRecord) float64 { return e.Distinct1 })
	st.Distinct2 = fin(func(e *EvalRecord) float64 { return e.Distinct2 })
	st.TieRate = statOf(rs, func(r *expRun) float64 {
		var ties, kept int64
		for _, s := range r.Phases {
			ties += s.Ties
			kept += s.Pairs
		}
		if ties+kept == 0 {
			return math.NaN()
		}
		return float64(ties) / float64(ties+kept)
	})
	st.PairsKept = statOf(rs, func(r *expRun) float64 {
		var kept int64
		for _, s := range r.Phases {
			kept += s.Pairs
		}
		return float64(kept)
	})
	st.Identical = statOf(rs, func(r *expRun) float64 {
		var n int64
		for _, s := range r.Phases {
			n += s.Identical
		}
		return float64(n)
	})
	st.WallSeconds = statOf(rs, func(r *expRun) float64 { return r.WallSeconds })
	st.OptimizerSteps = statOf(rs, func(r *expRun) float64 {
		n := int64(0)
		for _, s := range r.OptimizerSteps {
			n += s
		}
		return float64(n)
	})
	st.MaxKL = statOf(rs, func(r *expRun) float64 { return stats.MaxKL(r.Front) })
	perPhase := st.Pairs / max(st.Phases, 1)
	for k := 0; k <= st.Phases; k++ {
		ps := PhaseStats{Phase: k, PairsSoFar: k * perPhase}
		var ev []*expRun
		for _, r := range rs {
			if k < len(r.Evals) && r.Evals[k] != nil {
				ev = append(ev, r)
			}
		}
		if len(ev) > 0 {
			ps.Evaluated = true
			ps.GoldReward = statOf(ev, func(r *expRun) float64 { return r.Evals[k].GoldReward })
			ps.KL = statOf(ev, func(r *expRun) float64 { return r.Evals[k].KLToInitial })
			ps.WinRate = statOf(ev, func(r *expRun) float64 { return r.Evals[k].WinRate })
		}
		if k > 0 {
			sum := func(f func(pipeline.PhaseSummary) float64) stats.Stat {
				return statOf(rs, func(r *expRun) float64 {
					if k-1 < len(r.Phases) {
						return f(r.Phases[k-1])
					}
					return math.NaN()
				})
			}
			ps.PairsKept = sum(func(s pipeline.PhaseSummary) float64 { return float64(s.Pairs) })
			ps.Ties = sum(func(s pipeline.PhaseSummary) float64 { return float64(s.Ties) })
			ps.KLToRef = sum(func(s pipeline.PhaseSummary) float64 { return s.KLToRef })
			ps.Margin = sum(func(s pipeline.PhaseSummary) float64 { return s.Margin })
			ps.FreshPairAccuracy = sum(func(s pipeline.PhaseSummary) float64 { return valOr(s.FreshPairAccuracy, math.NaN()) })
			ps.FreshLengthBalanced = sum(func(s pipeline.PhaseSummary) float64 { return valOr(s.FreshLengthBalanced, math.NaN()) })
			ps.TrainPairAccuracy = sum(func(s pipeline.PhaseSummary) float64 { return valOr(s.TrainPairAccuracy, math.NaN()) })
			ps.OptimizerSteps = statOf(rs, func(r *expRun) float64 {
				if k-1 < len(r.OptimizerSteps) {
					return float64(r.OptimizerSteps[k-1])
				}
				return math.NaN()
			})
		}
		st.PerPhase = append(st.PerPhase, ps)
	}
}

// initialStats summarises phase 0 (the initial model) of the baseline's runs.
func initialStats(base *ArmStats) ArmStats {
	st := ArmStats{Arm: "initial model", Seeds: base.Seeds}
	rs := base.runs
	ini := func(f func(*EvalRecord) float64) stats.Stat {
		return statOf(rs, func(r *expRun) float64 { return f(r.Evals[0]) })
	}
	st.WinRate = ini(func(e *EvalRecord) float64 { return e.WinRate })
	st.HeldOutWinRate = ini(func(e *EvalRecord) float64 { return e.HeldOutWinRate })
	st.GoldReward = ini(func(e *EvalRecord) float64 { return e.GoldReward })
	st.GreedyReward = ini(func(e *EvalRecord) float64 { return e.GreedyReward })
	st.HeldOutReward = ini(func(e *EvalRecord) float64 { return e.HeldOutReward })
	st.RefTieRate = ini(func(e *EvalRecord) float64 { return e.TieRate })
	st.KL = ini(func(e *EvalRecord) float64 { return e.KLToInitial })
	st.MeanLength = ini(func(e *EvalRecord) float64 { return e.MeanLength })
	st.Distinct1 = ini(func(e *EvalRecord) float64 { return e.Distinct1 })
	st.Distinct2 = ini(func(e *EvalRecord) float64 { return e.Distinct2 })
	return st
}

// pairedDiffs bootstraps the arm's final outcomes against base's (the baseline, or a named
// comparison's other arm) on the seeds both have: the same prompts (the first evalPrompts of
// the split) under the same seed.
func pairedDiffs(st, base *ArmStats, resamples int) (Deltas, error) {
	var d Deltas
	var win, winB, gold, goldB, held, heldB, sg, sgB, sh, shB [][]float64
	samples := true // every paired run has per-prompt sample rewards
	for _, r := range st.runs {
		i := slices.Index(base.Seeds, r.Seed)
		if i < 0 {
			continue
		}
		a, b := r.final(), base.runs[i].final()
		if len(a.Win) != len(b.Win) || len(a.Win) == 0 {
			return d, fmt.Errorf("arm %s seed %d: %d evaluated prompts, %s has %d: the paired bootstrap needs the same prompts (same spec.budget.evalPrompts)",
				st.Arm, r.Seed, len(a.Win), base.Arm, len(b.Win))
		}
		w, wb := make([]float64, len(a.Win)), make([]float64, len(a.Win))
		for j := range a.Win {
			// A win is a strictly higher score than the reference, as in pipeline.EvalResult.WinRate.
			w[j], wb[j] = indicator(a.Win[j] == 1), indicator(b.Win[j] == 1)
		}
		win, winB = append(win, w), append(winB, wb)
		gold, goldB = append(gold, a.Gold), append(goldB, b.Gold)
		held, heldB = append(held, a.HeldOut), append(heldB, b.HeldOut)
		if a.SampleGold == nil || b.SampleGold == nil || a.SampleHeldOut == nil || b.SampleHeldOut == nil {
			samples = false
		}
		sg, sgB = append(sg, a.SampleGold), append(sgB, b.SampleGold)
		sh, shB = append(sh, a.SampleHeldOut), append(shB, b.SampleHeldOut)
	}
	if len(win) == 0 {
		return d, nil
	}
	type pair struct {
		a, b [][]float64
		dst  **stats.BootstrapCI
	}
	cs := []pair{{win, winB, &d.DeltaWin}, {gold, goldB, &d.DeltaGreedy}, {held, heldB, &d.DeltaHeldOut}}
	if samples {
		cs = append(cs, pair{sg, sgB, &d.DeltaSampleGold}, pair{sh, shB, &d.DeltaSampleHeldOut})
	}
	for _, c := range cs {
		ci, err := stats.HierarchicalBootstrap(c.a, c.b, resamples, 0.95, stats.BootstrapSeed)
		if err != nil {
			return d, fmt.Errorf("arm %s against %s: %w", st.Arm, base.Arm, err)
		}
		*c.dst = &ci
	}
	return d, nil
}

func indicator(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// matchedKL picks the common KL (the smallest max KL of all runs, so that no frontier is
// extrapolated) and reads every run's frontier there; an arm gets no value ("no overlap")
// unless every one of its runs has a trained evaluation around it (stats.Supported).
func (rep *Report) matchedKL() {
	rep.CommonKL = math.Inf(1)
	for _, st := range rep.Arms {
		for _, r := range st.runs {
			if m := stats.MaxKL(r.Front); m < rep.CommonKL {
				rep.CommonKL, rep.KLLimiter = m, r.Name
			}
		}
	}
	if math.IsInf(rep.CommonKL, 1) {
		rep.CommonKL = math.NaN()
	}
	for i := range rep.Arms {
		st := &rep.Arms[i]
		var xs []float64
		for _, r := range st.runs {
			v, ok := stats.FrontierAt(r.Front, rep.CommonKL)
			if !ok || !stats.Supported(r.Trained, rep.CommonKL, rep.KLBand) {
				xs = nil
				break
			}
			xs = append(xs, v)
		}
		st.RewardAtKL = stats.MeanStd(xs)
	}
}

// valOr is *p, or def when p is nil (a diagnostic the phase does not have).
func valOr(p *float64, def float64) float64 {
	if p == nil {
		return def
	}
	return *p
}
