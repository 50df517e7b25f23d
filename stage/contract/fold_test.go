package contract

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bpo-dev/bpo/api/v1alpha1"
)

func i64(v int64) *int64 { return &v }

func TestFold(t *testing.T) {
	type R = v1alpha1.StageResult
	cases := map[string]struct {
		stage   string
		byIndex map[int32]R
		want    Folded
	}{
		"sample sums its shards": {
			stage:   v1alpha1.StageSample,
			byIndex: map[int32]R{0: {Phase: 2, Samples: 8, Pairs: 3, Identical: 1}, 1: {Phase: 2, Index: 1, Samples: 6, Pairs: 2, Identical: 1}},
			want:    Folded{StageResult: R{Stage: "sample", Phase: 2, Samples: 14, Pairs: 5, Identical: 2}},
		},
		"label sums pairs, ties, accounting; guard share over the shards that count it": {
			stage: v1alpha1.StageLabel,
			byIndex: map[int32]R{
				0: {Pairs: 6, Ties: 1, GuardDecided: i64(3), Annotation: &v1alpha1.AnnotationAccounting{Pairs: 7, Requests: 14}},
				1: {Pairs: 4, Ties: 2, Annotation: &v1alpha1.AnnotationAccounting{Pairs: 6, Requests: 12, Invalid: 1}},
				2: {Pairs: 2, GuardDecided: i64(0)},
			},
			want: Folded{
				StageResult:       R{Stage: "label", Pairs: 12, Ties: 3, GuardDecided: i64(3), Annotation: &v1alpha1.AnnotationAccounting{Pairs: 13, Requests: 26, Invalid: 1}},
				GuardDecidedShare: f64(3.0 / 8),
			},
		},
		"label without a guard": {
			stage:   v1alpha1.StageLabel,
			byIndex: map[int32]R{0: {Pairs: 6}},
			want:    Folded{StageResult: R{Stage: "label", Pairs: 6}},
		},
		"train averages each diagnostic over the members that report it; member 0's checkpoint": {
			stage: v1alpha1.StageTrain,
			byIndex: map[int32]R{
				1: {Index: 1, Loss: f64(0.4), RewardAccuracy: f64(0.5), KLToInitial: f64(0.2), Checkpoint: "run/phase-1/members/member-1"},
				0: {Loss: f64(0.6), RewardAccuracy: f64(0.7), FreshPairAccuracy: f64(0.9), FreshLengthBalanced: f64(0.85), PrevTrainPairAccuracy: f64(0.8), Checkpoint: "run/phase-1/members/member-0"},
			},
			want: Folded{StageResult: R{Stage: "train", Loss: f64(0.5), RewardAccuracy: f64(0.6), KLToInitial: f64(0.2),
				FreshPairAccuracy: f64(0.9), FreshLengthBalanced: f64(0.85), PrevTrainPairAccuracy: f64(0.8), Checkpoint: "run/phase-1/members/member-0"}},
		},
		"train without member 0 has no checkpoint": {
			stage:   v1alpha1.StageTrain,
			byIndex: map[int32]R{1: {Index: 1, Loss: f64(0.4), Checkpoint: "run/phase-1/members/member-1"}},
			want:    Folded{StageResult: R{Stage: "train", Loss: f64(0.4)}},
		},
		"eval's metrics are its pod's": {
			stage:   v1alpha1.StageEval,
			byIndex: map[int32]R{0: {Phase: 3, WinRate: f64(0.73), GoldReward: f64(1.5), MeanLength: f64(20), Distinct2: f64(0.4), Fluency: f64(0.9), TrainPairAccuracy: f64(0.8), JudgeWinRate: f64(0.6), KLToInitial: f64(0.01)}},
			want:    Folded{StageResult: R{Stage: "eval", Phase: 3, WinRate: f64(0.73), GoldReward: f64(1.5), MeanLength: f64(20), Distinct2: f64(0.4), Fluency: f64(0.9), TrainPairAccuracy: f64(0.8), JudgeWinRate: f64(0.6), KLToInitial: f64(0.01)}},
		},
		"nothing": {stage: v1alpha1.StageTrain, want: Folded{StageResult: R{Stage: "train"}}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if d := cmp.Diff(tc.want, Fold(tc.stage, tc.byIndex)); d != "" {
				t.Error(d)
			}
		})
	}
}
