// Package contract is the stage contract in code, one copy for both of its sides: the controller
// (controllers/, which builds stage Jobs and folds their results into status) and the `bpo
// <stage>` commands (cmd/bpo, pipeline/, which run in those Jobs' pods). It holds the stages and
// their completions, the invocation (flags, mount paths, environment), the termination message
// and the folding of a stage's results (docs/stage-contract.md).
//
// It is a leaf: it imports api/v1alpha1 (plain types), pflag and the standard library only, so
// the controller can use it without pulling in the trainer. The file schemas and the
// conformance check, which runs our own pipeline, live in the parent package stage.
package contract

import (
	"fmt"

	"github.com/bpo-dev/bpo/api/v1alpha1"
)

// Version is the version of the stage contract; status.stageContract records the version a run
// was started with.
const Version = "v1"

// Stages are the stage names in the order they run within a phase (spec.Stages says which a
// phase has: phase 0 is eval alone, the last phase ends with report, then export).
var Stages = []string{v1alpha1.StageSample, v1alpha1.StageLabel, v1alpha1.StageTrain, v1alpha1.StageEval, v1alpha1.StageReport, v1alpha1.StageExport}

// Known reports whether stage is one of Stages.
func Known(stage string) bool {
	switch stage {
	case v1alpha1.StageSample, v1alpha1.StageLabel, v1alpha1.StageTrain, v1alpha1.StageEval, v1alpha1.StageReport, v1alpha1.StageExport:
		return true
	}
	return false
}

// Sharded reports whether a stage splits its phase's rows into shards (and takes --shards):
// sample and label. Train's indices are ensemble members, eval has one pod.
func Sharded(stage string) bool {
	return stage == v1alpha1.StageSample || stage == v1alpha1.StageLabel
}

// Completions is the number of pods (completion indices) of a stage's Job, also the number of
// shard or member runs of the local runner: spec.sampler.parallelism and spec.labeler.parallelism
// (default 1) shards, one pod per ensemble member for train, one pod for eval, report and
// export.
func Completions(spec *v1alpha1.AlignmentRunSpec, stage string) int32 {
	switch stage {
	case v1alpha1.StageSample:
		return deref(spec.Sampler.Parallelism, 1)
	case v1alpha1.StageLabel:
		return deref(spec.Labeler.Parallelism, 1)
	case v1alpha1.StageTrain:
		return max(spec.Ensemble.Members, 1)
	}
	return 1
}

// FirstPhase is the lowest --phase a stage takes: eval also evaluates the initial model
// (phase 0), the other stages run in data-collection phases 1..F.
func FirstPhase(stage string) int {
	if stage == v1alpha1.StageEval {
		return 0
	}
	return 1
}

// CheckPhase reports a phase k a stage cannot run in, for a run of `phases` phases (F);
// everyPhase is spec.output.everyPhase (export runs in every phase, else in the last only).
func CheckPhase(stage string, k, phases int, everyPhase bool) error {
	if lo := FirstPhase(stage); k < lo {
		return fmt.Errorf("--phase must be >= %d (got %d)", lo, k)
	}
	if k > phases {
		return fmt.Errorf("--phase %d is beyond spec.trustRegion.phases (%d)", k, phases)
	}
	if stage == v1alpha1.StageReport && k != phases {
		return fmt.Errorf("--phase must be the last phase, spec.trustRegion.phases (%d), for the report (got %d)", phases, k)
	}
	if stage == v1alpha1.StageExport && k != phases && !everyPhase {
		return fmt.Errorf("--phase must be the last phase, spec.trustRegion.phases (%d), for the export (got %d): set spec.output.everyPhase to export earlier phases", phases, k)
	}
	return nil
}

func deref[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}
