package pipeline

import (
	"fmt"
	"maps"
	"slices"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/stage/contract"
)

// PhaseSummary reads phase k's summary back from the workspace: the stages' done markers (the
// StageResults every stage stores next to its outputs) folded as the controller folds its pods'
// results into status (contract.Fold), the pair diagnostics and the evaluation. The local loop,
// the report stage of a cluster run and `bpo report` all call it, so a report reads the same
// numbers however the run was executed. Seconds is the sum of the phase's stage durations (its
// compute time: in a cluster, shards run side by side).
func (e *Env) PhaseSummary(k int) (PhaseSummary, error) {
	sum := PhaseSummary{Phase: k}
	sample, err := e.shardResults(k, v1alpha1.StageSample)
	if err != nil {
		return sum, err
	}
	sum.Samples = contract.Fold(v1alpha1.StageSample, sample).Samples
	label, err := e.shardResults(k, v1alpha1.StageLabel)
	if err != nil {
		return sum, err
	}
	l := contract.Fold(v1alpha1.StageLabel, label)
	sum.Pairs, sum.Ties, sum.Identical = l.Pairs, l.Ties, l.Identical
	sum.GuardDecided, sum.Annotation = l.GuardDecidedShare, l.Annotation
	train := map[int32]v1alpha1.StageResult{}
	for m := range e.Run.Members() {
		r, ok := e.Done(k, v1alpha1.StageTrain, m)
		if !ok {
			return sum, fmt.Errorf("phase %d: train member %d has not finished (%s is missing)", k, m, e.WS.DonePath(k, v1alpha1.StageTrain, m))
		}
		train[int32(m)] = r
	}
	t := contract.Fold(v1alpha1.StageTrain, train)
	sum.Loss, sum.Accuracy, sum.Margin, sum.KLToRef = val(t.Loss), val(t.RewardAccuracy), val(t.RewardMargin), val(t.KLToReference)
	for _, rs := range []map[int32]v1alpha1.StageResult{sample, label, train} {
		// In index order: a float sum in map order differs in its last bits from run to run.
		for _, i := range slices.Sorted(maps.Keys(rs)) {
			sum.Seconds += rs[i].DurationSeconds
		}
	}
	fresh, err := e.FreshPairAccuracy(k)
	if err != nil {
		return sum, err
	}
	if fresh != nil {
		sum.FreshPairAccuracy = fresh.Accuracy
		sum.FreshRewardFollowsLength, sum.FreshGoldPrefersLonger = fresh.RewardFollowsLength, fresh.GoldPrefersLonger
		sum.FreshLengthBalanced = fresh.LengthBalanced
	}
	trained, err := e.TrainPairAccuracy(k)
	if err != nil {
		return sum, err
	}
	sum.TrainPairAccuracy = trained.Accuracy
	if r, ok := e.Done(k, v1alpha1.StageEval, -1); ok {
		sum.Evaluated = true
		sum.WinRate, sum.GoldReward, sum.KLToInit = val(r.WinRate), val(r.GoldReward), val(r.KLToInitial)
		sum.JudgeWinRate = r.JudgeWinRate
		sum.Seconds += r.DurationSeconds
	}
	return sum, nil
}

// Summaries reads every phase's summary back from a finished workspace.
func (e *Env) Summaries() ([]PhaseSummary, error) {
	var out []PhaseSummary
	for k := 1; k <= e.Run.Phases(); k++ {
		s, err := e.PhaseSummary(k)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// shardResults reads the done markers of every recorded shard of a sharded stage of phase k,
// by shard.
func (e *Env) shardResults(k int, stage string) (map[int32]v1alpha1.StageResult, error) {
	n, err := e.recordedShards(k, stage)
	if err != nil {
		return nil, err
	}
	out := make(map[int32]v1alpha1.StageResult, n)
	for j := range n {
		r, ok := e.Done(k, stage, j)
		if !ok {
			return nil, fmt.Errorf("phase %d: %s shard %d of %d has not finished (%s is missing)", k, stage, j, n, e.WS.DonePath(k, stage, j))
		}
		out[int32(j)] = r
	}
	return out, nil
}
