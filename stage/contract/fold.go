package contract

import (
	"slices"

	"github.com/bpo-dev/bpo/api/v1alpha1"
)

// Folded is one stage's results folded into the numbers of its phase, as if one pod had done
// all of the stage's work. Both the controller (status.phaseResults) and the local runner
// (pipeline.PhaseSummary) show these.
type Folded struct {
	// The stage's results combined: counts and annotation accounting summed over indices (sample:
	// samples, pairs = candidate pairs, identical; label: pairs = pairs kept, ties, identical);
	// each train diagnostic the mean over the members that report it; the checkpoint member 0's
	// (index 0); eval's metrics as its pod reports them; report's path; export's URIs.
	v1alpha1.StageResult
	// GuardDecidedShare (label) is the fraction of the kept pairs whose order the gold
	// annotator's degeneracy guard decided, over the shards that count them; nil when none does.
	GuardDecidedShare *float64
}

// Fold folds a stage's results, keyed by completion index. Stage, Phase and Index of the
// folded result are the stage's, its phase and 0.
func Fold(stage string, byIndex map[int32]v1alpha1.StageResult) Folded {
	idx := make([]int32, 0, len(byIndex))
	for i := range byIndex {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	results := make([]v1alpha1.StageResult, 0, len(idx))
	for _, i := range idx {
		results = append(results, byIndex[i])
	}
	var f Folded
	f.Stage = stage
	if len(results) > 0 {
		f.Phase = results[0].Phase
	}
	var decided, measured int64 // guard-decided pairs, and the pairs of the shards that count them
	for _, r := range results {
		f.Samples += r.Samples
		f.Pairs += r.Pairs
		f.Identical += r.Identical
		f.Ties += r.Ties
		if r.Annotation != nil {
			if f.Annotation == nil {
				f.Annotation = &v1alpha1.AnnotationAccounting{}
			}
			f.Annotation.Add(*r.Annotation)
		}
		if r.GuardDecided != nil {
			decided += *r.GuardDecided
			measured += r.Pairs
		}
	}
	if measured > 0 {
		f.GuardDecided = &decided
		f.GuardDecidedShare = ptr(float64(decided) / float64(measured))
	}
	// Every real-valued metric: the mean over the indices that report it (train's members; eval
	// has one pod, so its metrics are its own).
	for _, pick := range []func(*v1alpha1.StageResult) **float64{
		func(r *v1alpha1.StageResult) **float64 { return &r.Loss },
		func(r *v1alpha1.StageResult) **float64 { return &r.RewardAccuracy },
		func(r *v1alpha1.StageResult) **float64 { return &r.RewardMargin },
		func(r *v1alpha1.StageResult) **float64 { return &r.KLToReference },
		func(r *v1alpha1.StageResult) **float64 { return &r.FreshPairAccuracy },
		func(r *v1alpha1.StageResult) **float64 { return &r.FreshLengthBalanced },
		func(r *v1alpha1.StageResult) **float64 { return &r.PrevTrainPairAccuracy },
		func(r *v1alpha1.StageResult) **float64 { return &r.WinRate },
		func(r *v1alpha1.StageResult) **float64 { return &r.GoldReward },
		func(r *v1alpha1.StageResult) **float64 { return &r.KLToInitial },
		func(r *v1alpha1.StageResult) **float64 { return &r.MeanLength },
		func(r *v1alpha1.StageResult) **float64 { return &r.Distinct2 },
		func(r *v1alpha1.StageResult) **float64 { return &r.TrainPairAccuracy },
		func(r *v1alpha1.StageResult) **float64 { return &r.Fluency },
		func(r *v1alpha1.StageResult) **float64 { return &r.JudgeWinRate },
	} {
		*pick(&f.StageResult) = meanOf(results, pick)
	}
	if r, ok := byIndex[0]; ok {
		f.Checkpoint, f.Report, f.Outputs = r.Checkpoint, r.Report, r.Outputs
	}
	return f
}

// meanOf is the mean of the values picked from the results that set it, nil when none does.
func meanOf(results []v1alpha1.StageResult, pick func(*v1alpha1.StageResult) **float64) *float64 {
	var sum float64
	n := 0
	for i := range results {
		if v := *pick(&results[i]); v != nil {
			sum += *v
			n++
		}
	}
	if n == 0 {
		return nil
	}
	return ptr(sum / float64(n))
}

func ptr[T any](v T) *T { return &v }
