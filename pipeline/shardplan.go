package pipeline

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/bpo-dev/bpo/api/v1alpha1"
)

// A phase finishes with the shard count it started with.
//
// The sample and label stages split their rows into shards by the stage's parallelism, and the
// readers (label reads the samples, train reads the pairs) must read exactly the shards that were
// written. The parallelism is mutable (a user may change it between stages, or between a
// failed attempt and its retry), so the first shard of a stage to run records the count in the
// workspace (phase-<k>/<stage>-shards.json), and from then on:
//   - a stage pod i of a different count n processes every recorded shard j with j mod n = i
//     (done shards are no-ops; pods past the recorded count process none), so raising or lowering
//     the parallelism mid-phase neither drops nor repeats a row;
//   - readers read the recorded count of shards, and check that they cover every row once.

// shardPlan is the recorded shard count of one stage of one phase.
type shardPlan struct {
	Stage  string `json:"stage"`
	Phase  int    `json:"phase"`
	Shards int    `json:"shards"`
}

// ShardPlanPath is where the shard count of stage in phase k is recorded.
func (w *Workspace) ShardPlanPath(k int, stage string) string {
	return filepath.Join(w.PhaseDir(k), stage+"-shards.json")
}

// recordedShards returns the shard count stage of phase k was started with.
func (e *Env) recordedShards(k int, stage string) (int, error) {
	var p shardPlan
	path := e.WS.ShardPlanPath(k, stage)
	if err := readJSON(path, &p); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, fmt.Errorf("phase %d has no %s shards yet (%s is missing): run the %s stage first", k, stage, path, stage)
		}
		return 0, fmt.Errorf("shard plan %s is corrupt (%v): it records how many %s shards phase %d was started with; restore it or rerun the phase", path, err, stage, k)
	}
	if p.Shards < 1 || p.Stage != stage || p.Phase != k {
		return 0, fmt.Errorf("shard plan %s is inconsistent (%+v): restore it or rerun the phase", path, p)
	}
	return p.Shards, nil
}

// planShards returns the shard count of stage in phase k: the recorded one, or shards, recorded
// now, when the stage starts for the first time.
func (e *Env) planShards(k int, stage string, shards int) (int, error) {
	n, err := e.recordedShards(k, stage)
	if err == nil {
		return n, nil
	}
	if _, statErr := os.Stat(e.WS.ShardPlanPath(k, stage)); !errors.Is(statErr, os.ErrNotExist) {
		return 0, err // corrupt, not missing
	}
	if err := writeJSONAtomic(e.WS.ShardPlanPath(k, stage), shardPlan{Stage: stage, Phase: k, Shards: shards}); err != nil {
		return 0, err
	}
	// Pods of one Job start together and record the same count; read back what won.
	return e.recordedShards(k, stage)
}

// runShards runs pod `pod` of `pods` of a sharded stage: every recorded shard j with
// j mod pods = pod, through one(j, n) with n the recorded count. The result sums the shards' counts
// (the controller sums the pods' results, and a done shard reports its stored result again, so a
// retry counts each shard once); its index is the pod's.
func (e *Env) runShards(k int, stage string, pod, pods int, one func(j, n int) (v1alpha1.StageResult, error)) (v1alpha1.StageResult, error) {
	sum := v1alpha1.StageResult{Stage: stage, Phase: int32(k), Index: int32(max(pod, 0))}
	if pod < 0 || pod >= pods {
		return sum, fmt.Errorf("phase %d %s: shard index %d outside [0,%d)", k, stage, pod, pods)
	}
	n, err := e.planShards(k, stage, pods)
	if err != nil {
		return sum, fmt.Errorf("phase %d %s: %w", k, stage, err)
	}
	for j := pod; j < n; j += pods {
		r, err := one(j, n)
		if err != nil {
			return r, err
		}
		sum.GuardDecided = addCount(sum.GuardDecided, r.GuardDecided)
		sum.Annotation = addAccounting(sum.Annotation, r.Annotation)
		sum.Samples += r.Samples
		sum.Pairs += r.Pairs
		sum.Identical += r.Identical
		sum.Ties += r.Ties
		sum.DurationSeconds += r.DurationSeconds
		if sum.Checkpoint == "" {
			sum.Checkpoint = r.Checkpoint
		}
	}
	return sum, nil
}

// addCount adds an optional count to an optional total: nil while neither is set.
func addCount(total, n *int64) *int64 {
	if n == nil {
		return total
	}
	t := *n
	if total != nil {
		t += *total
	}
	return &t
}

// addAccounting adds an optional accounting to an optional total: nil while neither is set.
func addAccounting(sum, a *v1alpha1.AnnotationAccounting) *v1alpha1.AnnotationAccounting {
	if a == nil {
		return sum
	}
	out := *a
	if sum != nil {
		out.Add(*sum)
	}
	return &out
}
