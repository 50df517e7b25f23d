package pipeline

import (
	"fmt"

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
	// The fresh pairs' length confound (PairAccuracy.RewardFollowsLength, GoldPrefersLonger).
	FreshRewardFollowsLength *float64 `json:"freshRewardFollowsLength,omitempty"`
	FreshGoldPrefersLonger   *float64 `json:"freshGoldPrefersLonger,omitempty"`
	// FreshLengthBalanced is the fresh pairs' PairAccuracy.LengthBalanced.
	FreshLengthBalanced *float64 `json:"freshLengthBalanced,omitempty"`
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
	// StageStart is called before each stage (index -1 for eval, report and export).
	StageStart func(k int, stage string, index int)
	// PhaseDone is called after each phase with its summary.
	PhaseDone func(PhaseSummary)
	// StageDone, when set, is called after each stage (all its shards or members); an error
	// stops the run. The local runner on an object store publishes there.
	StageDone func(k int, stage string) error
}

// RunAll runs the whole loop in this process with the very stage functions the pods run, in
// the order the controller runs them (spec.Stages): the initial model's evaluation (phase 0,
// the baseline), then for each phase every sample shard, label shard and member, the
// evaluation when the schedule asks for one, and after the last phase the report. Finished
// stages are skipped, so an interrupted run resumes after the last completed stage.
func (e *Env) RunAll(h RunHooks) ([]PhaseSummary, error) {
	spec := &e.Run.Spec
	var out []PhaseSummary
	for k := int(spec.FirstPhase()); k <= e.Run.Phases(); k++ {
		for _, stage := range spec.Stages(int32(k)) {
			if err := e.runStageLocally(k, stage, h); err != nil {
				return out, err
			}
			if k >= 1 && stage == v1alpha1.StageTrain {
				// The pair diagnostics every phase reports, evaluated or not: a small step of its
				// own here (in a cluster, the next phase's train or the eval stage measures them).
				if _, err := e.FreshPairAccuracy(k); err != nil {
					return out, err
				}
				if _, err := e.TrainPairAccuracy(k); err != nil {
					return out, err
				}
			}
			if h.StageDone != nil {
				if err := h.StageDone(k, stage); err != nil {
					return out, err
				}
			}
		}
		if k == 0 {
			continue
		}
		sum, err := e.PhaseSummary(k)
		if err != nil {
			return out, err
		}
		out = append(out, sum)
		if h.PhaseDone != nil {
			h.PhaseDone(sum)
		}
	}
	return out, nil
}

// runStageLocally runs every pod's share of one stage of phase k in turn, as the stage's Job
// would (contract.Completions pods; RunStage is what each pod runs).
func (e *Env) runStageLocally(k int, stage string, h RunHooks) error {
	n := int(contract.Completions(&e.Run.Spec, stage))
	for i := range n {
		if h.StageStart != nil {
			index := i
			if !contract.Sharded(stage) && stage != v1alpha1.StageTrain {
				index = -1 // a stage of one pod: no shard or member to show
			}
			h.StageStart(k, stage, index)
		}
		if _, err := e.RunStage(StageCall{Stage: stage, Phase: k, Index: i, Shards: n}); err != nil {
			return err
		}
	}
	return nil
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
