package experiment

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
)

// addChecks lists the effects a reader must know about before reading the tables.
func (rep *Report) addChecks() {
	add := func(format string, args ...any) { rep.Checks = append(rep.Checks, fmt.Sprintf(format, args...)) }
	if rep.Split == SplitValidation {
		add("these are **validation-split** numbers, for choosing hyperparameters; final numbers come from the eval split")
	}
	var done []ArmStats
	for _, st := range rep.Arms {
		if len(st.runs) > 0 {
			done = append(done, st)
		}
	}
	budgets := map[int][]string{}
	for _, st := range done {
		budgets[st.Pairs] = append(budgets[st.Pairs], st.Arm)
	}
	if len(budgets) > 1 {
		var parts []string
		for p, arms := range budgets {
			parts = append(parts, fmt.Sprintf("%d pairs: %s", p, strings.Join(arms, ", ")))
		}
		sort.Strings(parts)
		add("the arms do not share one annotation budget (%s)", strings.Join(parts, "; "))
	}
	// Equal optimizer steps are part of an equal budget: ties and identical samples drop pairs,
	// and each phase rounds its last batch up, so arms of one recipe can still differ.
	steps := map[float64][]string{}
	for _, st := range done {
		if st.OptimizerSteps.N > 0 {
			steps[st.OptimizerSteps.Mean] = append(steps[st.OptimizerSteps.Mean], st.Arm)
		}
	}
	if len(steps) > 1 {
		var parts []string
		for s, arms := range steps {
			parts = append(parts, fmt.Sprintf("%.1f: %s", s, strings.Join(arms, ", ")))
		}
		sort.Strings(parts)
		add("the arms took different numbers of optimizer steps per member (mean over seeds; %s)", strings.Join(parts, "; "))
	}
	var sat []string
	for _, st := range done {
		if st.WinRate.Mean >= 0.95 || st.WinRate.Mean <= 0.05 {
			sat = append(sat, fmt.Sprintf("%s (%.3f)", st.Arm, st.WinRate.Mean))
		}
	}
	if len(sat) > 0 {
		add("win rate saturated (>= 0.95 or <= 0.05), it cannot rank: %s; compare gold reward at matched KL instead", strings.Join(sat, ", "))
	}
	// Effective data: the pilot's offline arm kept far fewer pairs because the initial model's samples tie.
	lo, hi := math.Inf(1), math.Inf(-1)
	var loArm, hiArm string
	for _, st := range done {
		if v := st.PairsKept.Mean; v < lo {
			lo, loArm = v, st.Arm
		}
		if v := st.PairsKept.Mean; v > hi {
			hi, hiArm = v, st.Arm
		}
	}
	if hi > 0 && lo < 0.8*hi {
		add("the arms trained on different amounts of data after ties and identical samples were dropped: %s kept %.0f pairs, %s %.0f (same annotation budget)", loArm, lo, hiArm, hi)
	}
	ini := rep.Initial
	for _, st := range done {
		if ini.Distinct2.Mean > 0 && st.Distinct2.Mean < 0.5*ini.Distinct2.Mean {
			add("%s: distinct-2 fell from %.3f (initial model) to %.3f: repetitive outputs, possible reward hacking", st.Arm, ini.Distinct2.Mean, st.Distinct2.Mean)
		}
		if ini.MeanLength.Mean > 0 && math.Abs(st.MeanLength.Mean-ini.MeanLength.Mean) > 0.5*ini.MeanLength.Mean {
			add("%s: mean length moved from %.1f to %.1f tokens", st.Arm, ini.MeanLength.Mean, st.MeanLength.Mean)
		}
		if d, h := st.DeltaGreedy, st.DeltaHeldOut; d != nil && h != nil && d.Lo > 0 && h.Hi < 0 {
			add("%s: beats %s on the gold annotator (%s) but loses on the held-out evaluator (%s): the gain does not transfer", st.Arm, rep.Baseline, d.Format("%.3f"), h.Format("%.3f"))
		}
	}
	if !math.IsNaN(rep.CommonKL) {
		var maxes []float64
		for _, st := range done {
			maxes = append(maxes, st.MaxKL.Mean)
		}
		slices.Sort(maxes)
		switch med := maxes[len(maxes)/2]; {
		case rep.CommonKL <= 0:
			add("run %s never measured a KL above 0 (its policies stayed at the initial model, within the estimate's noise), so the matched-KL comparison is at KL 0: read the frontier plot", rep.KLLimiter)
		case rep.CommonKL < 0.25*med:
			add("the matched-KL comparison sits at KL %.3g, set by %s, far below the median arm's reach (%.3g): read the frontier plot too", rep.CommonKL, rep.KLLimiter, med)
		}
	}
}
