package pipeline

import (
	"fmt"
	"time"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/stage/contract"
)

// PhaseSummary is one row of the local runner's per-phase table (and of report.md).
type PhaseSummary struct {
	Phase      int     `json:"phase"`
	Samples    int64   `json:"samples"`
	Pairs      int64   `json:"pairs"`
	Identical  int64   `json:"identical"`
	Ties       int64   `json:"ties"`
	Loss       float64 `json:"loss"`
	Accuracy   float64 `json:"rewardAccuracy"`
	Margin     float64 `json:"rewardMargin"`
	KLToRef    float64 `json:"klToReference"`
	Evaluated  bool    `json:"evaluated"`
	WinRate    float64 `json:"winRate,omitempty"`
	GoldReward float64 `json:"goldReward,omitempty"`
	KLToInit   float64 `json:"klToInitial,omitempty"`
	Seconds    float64 `json:"seconds"`
	// Pair diagnostics (diagnostics.go): the implicit-reward accuracy of the policy after phase
	// k-1 on this phase's pairs before training on them (phases >= 2 only), and of the policy
	// after this phase on the same pairs. Nil when undefined (phase 1, or no pairs kept).
	FreshPairAccuracy *float64 `json:"freshPairAccuracy,omitempty"`
	TrainPairAccuracy *float64 `json:"trainPairAccuracy,omitempty"`
	// GuardDecided is the fraction of the kept pairs whose order the gold annotator's degeneracy
	// guard decided, when the label stage counts them.
	GuardDecided *float64 `json:"guardDecided,omitempty"`
	// Annotation is what the label stage spent on a remote annotator (nil when built in).
	Annotation *v1alpha1.AnnotationAccounting `json:"annotation,omitempty"`
	// JudgeWinRate is spec.evaluator.judge's win rate against the references, when evaluated.
	JudgeWinRate *float64 `json:"judgeWinRate,omitempty"`
}

// RunHooks lets the caller watch the loop (progress bars, tables).
type RunHooks struct {
	// StageStart is called before each stage (index -1 for eval).
	StageStart func(k int, stage string, index int)
	// PhaseDone is called after each phase with its summary.
	PhaseDone func(PhaseSummary)
}

// RunAll runs the whole loop in this process with the very stage functions the pods
// run: the initial model's evaluation (phase 0, the baseline of the report), then for
// each phase every sample shard, label shard and member, and the evaluation when the
// schedule asks for one. Finished stages are skipped, so an interrupted run resumes
// after the last completed stage.
func (e *Env) RunAll(h RunHooks) ([]PhaseSummary, error) {
	start := func(k int, stage string, index int) {
		if h.StageStart != nil {
			h.StageStart(k, stage, index)
		}
	}
	start(0, v1alpha1.StageEval, -1)
	if _, err := e.Eval(0); err != nil {
		return nil, err
	}
	var out []PhaseSummary
	for k := 1; k <= e.Run.Phases(); k++ {
		t0 := time.Now()
		sum := PhaseSummary{Phase: k}
		// The stages' results fold into the phase's numbers as the controller folds them into
		// status (contract.Fold).
		sampled := map[int32]v1alpha1.StageResult{}
		for s := 0; s < e.Run.SampleShards(); s++ {
			start(k, v1alpha1.StageSample, s)
			r, err := e.Sample(k, s, e.Run.SampleShards())
			if err != nil {
				return out, err
			}
			sampled[int32(s)] = r
		}
		sum.Samples = contract.Fold(v1alpha1.StageSample, sampled).Samples
		labelled := map[int32]v1alpha1.StageResult{}
		for s := 0; s < e.Run.LabelShards(); s++ {
			start(k, v1alpha1.StageLabel, s)
			r, err := e.Label(k, s, e.Run.LabelShards())
			if err != nil {
				return out, err
			}
			labelled[int32(s)] = r
		}
		l := contract.Fold(v1alpha1.StageLabel, labelled)
		sum.Pairs, sum.Ties, sum.Identical = l.Pairs, l.Ties, l.Identical
		sum.GuardDecided, sum.Annotation = l.GuardDecidedShare, l.Annotation
		members := map[int32]v1alpha1.StageResult{}
		for m := 0; m < e.Run.Members(); m++ {
			start(k, v1alpha1.StageTrain, m)
			r, err := e.Train(k, m)
			if err != nil {
				return out, err
			}
			members[int32(m)] = r
		}
		t := contract.Fold(v1alpha1.StageTrain, members)
		sum.Loss, sum.Accuracy, sum.Margin, sum.KLToRef = val(t.Loss), val(t.RewardAccuracy), val(t.RewardMargin), val(t.KLToReference)
		// The pair diagnostics, read from (or, in a workspace from before they existed, written
		// to) the files member 0 and the eval stage share: a small step of its own here, so that
		// every phase has its train-pair accuracy whether or not it is evaluated.
		fresh, err := e.FreshPairAccuracy(k)
		if err != nil {
			return out, err
		}
		if fresh != nil {
			sum.FreshPairAccuracy = fresh.Accuracy
		}
		trained, err := e.TrainPairAccuracy(k)
		if err != nil {
			return out, err
		}
		sum.TrainPairAccuracy = trained.Accuracy
		for _, st := range e.Run.Spec.Stages(int32(k)) {
			if st != v1alpha1.StageEval {
				continue
			}
			start(k, v1alpha1.StageEval, -1)
			r, err := e.Eval(k)
			if err != nil {
				return out, err
			}
			sum.Evaluated = true
			sum.WinRate, sum.GoldReward, sum.KLToInit = val(r.WinRate), val(r.GoldReward), val(r.KLToInitial)
			sum.JudgeWinRate = r.JudgeWinRate
		}
		sum.Seconds = time.Since(t0).Seconds()
		out = append(out, sum)
		if h.PhaseDone != nil {
			h.PhaseDone(sum)
		}
	}
	return out, nil
}

func val(p *float64) float64 {
	if p == nil {
		return 0
	}
	return *p
}

// FormatTable renders phase summaries as a fixed-width table for the terminal.
func FormatTable(rows []PhaseSummary) string {
	s := fmt.Sprintf("%-5s %7s %6s %5s %9s %7s %8s %8s %8s %8s %8s\n",
		"phase", "samples", "pairs", "ties", "loss", "acc", "margin", "kl(ref)", "win", "reward", "kl(init)")
	for _, r := range rows {
		win, rew, kl := "-", "-", "-"
		if r.Evaluated {
			win, rew, kl = fmt.Sprintf("%.3f", r.WinRate), fmt.Sprintf("%.3f", r.GoldReward), fmt.Sprintf("%.2f", r.KLToInit)
		}
		s += fmt.Sprintf("%-5d %7d %6d %5d %9.4f %7.3f %8.3f %8.3f %8s %8s %8s\n",
			r.Phase, r.Samples, r.Pairs, r.Ties, r.Loss, r.Accuracy, r.Margin, r.KLToRef, win, rew, kl)
	}
	return s
}
