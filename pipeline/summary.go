package pipeline

import (
	"fmt"

	"github.com/bpo-dev/bpo/api/v1alpha1"
)

// PhaseSummary reads phase k's summary back from the workspace: the stages' done markers (the
// StageResults every stage stores next to its outputs), the pair diagnostics and the
// evaluation. The local loop, the report stage of a cluster run and `bpo report` all call it,
// so a report reads the same numbers however the run was executed. Seconds is the sum of the
// phase's stage durations (its compute time: in a cluster, shards run side by side).
func (e *Env) PhaseSummary(k int) (PhaseSummary, error) {
	sum := PhaseSummary{Phase: k}
	sample, err := e.shardResults(k, v1alpha1.StageSample)
	if err != nil {
		return sum, err
	}
	for _, r := range sample {
		sum.Samples += r.Samples
		sum.Seconds += r.DurationSeconds
	}
	label, err := e.shardResults(k, v1alpha1.StageLabel)
	if err != nil {
		return sum, err
	}
	var decided *int64
	for _, r := range label {
		sum.Pairs += r.Pairs
		sum.Ties += r.Ties
		sum.Identical += r.Identical
		sum.Seconds += r.DurationSeconds
		decided = addCount(decided, r.GuardDecided)
		sum.Annotation = addAccounting(sum.Annotation, r.Annotation)
	}
	if decided != nil && sum.Pairs > 0 {
		g := float64(*decided) / float64(sum.Pairs)
		sum.GuardDecided = &g
	}
	var train []v1alpha1.StageResult
	for m := range e.Run.Members() {
		r, ok := e.Done(k, v1alpha1.StageTrain, m)
		if !ok {
			return sum, fmt.Errorf("phase %d: train member %d has not finished (%s is missing)", k, m, e.WS.DonePath(k, v1alpha1.StageTrain, m))
		}
		train = append(train, r)
		sum.Seconds += r.DurationSeconds
	}
	sum.Loss, sum.Accuracy, sum.Margin, sum.KLToRef = meanTrain(train)
	fresh, err := e.FreshPairAccuracy(k)
	if err != nil {
		return sum, err
	}
	if fresh != nil {
		sum.FreshPairAccuracy = fresh.Accuracy
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

// shardResults reads the done markers of every recorded shard of a sharded stage of phase k.
func (e *Env) shardResults(k int, stage string) ([]v1alpha1.StageResult, error) {
	n, err := e.recordedShards(k, stage)
	if err != nil {
		return nil, err
	}
	out := make([]v1alpha1.StageResult, 0, n)
	for j := range n {
		r, ok := e.Done(k, stage, j)
		if !ok {
			return nil, fmt.Errorf("phase %d: %s shard %d of %d has not finished (%s is missing)", k, stage, j, n, e.WS.DonePath(k, stage, j))
		}
		out = append(out, r)
	}
	return out, nil
}
