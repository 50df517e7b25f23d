package pipeline

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/stage/contract"
	"github.com/bpo-dev/bpo/trainer/annotator"
	"github.com/bpo-dev/bpo/trainer/model"
	"github.com/bpo-dev/bpo/trainer/task"
)

// ProgressUpdate is a stage's progress: Done of Total units (rows, optimizer steps), and the
// stage's live numbers when it has any (the train stage's running loss).
type ProgressUpdate struct {
	Stage       string
	Done, Total int
	Metrics     map[string]float64
}

// Progress receives a stage's progress as it advances.
type Progress func(ProgressUpdate)

// Env is everything a stage function needs: the run, its workspace, and where the
// volume and data live. One Env serves any number of stage calls (the local runner
// reuses it across the whole run; a pod uses it for one stage).
type Env struct {
	Run *Run
	WS  *Workspace
	// VolumeRoot is the root of the workspace volume; spec paths are relative to it.
	VolumeRoot string
	// DataDir is where a ConfigMap data source is mounted (keys as files).
	DataDir string
	// ModelImageDir is where an oci:// spec.model.uri is mounted (contract.ModelImageMountPath in
	// a stage pod; tests point it elsewhere).
	ModelImageDir string
	// EvalSplit is "eval" (default) or "validation": the held-out prompts Eval uses.
	EvalSplit string
	// Progress, when set, is called as stages advance.
	Progress Progress
	// Log receives human-readable notes (nil = discard).
	Log io.Writer
	// Scorer, when set, replaces the annotator the spec names (tests, experiments).
	Scorer annotator.Scorer
	// TrainCommand, when set, is a stage program that Train runs in place of the Go trainer, as
	// the operator's train pods would (external.go; `bpo run` sets it from spec.trainer.command).
	TrainCommand []string

	base *Base
	task *task.Task
}

// OpenEnv loads a run manifest (run.yaml) and opens its workspace under volumeRoot: what a
// stage pod, and the conformance check, do first.
func OpenEnv(config, volumeRoot string) (*Env, error) {
	ar, err := LoadRunFile(config)
	if err != nil {
		return nil, err
	}
	run, err := NewRun(ar)
	if err != nil {
		return nil, err
	}
	if run.Spec.Workspace.ObjectStore != nil {
		return nil, fmt.Errorf("%s: spec.workspace.objectStore: this command reads a workspace folder; stage the run's folder from the bucket first (the stage commands do it themselves)", config)
	}
	return NewEnv(run, volumeRoot)
}

// NewEnv opens (or creates) the run's workspace under volumeRoot.
func NewEnv(run *Run, volumeRoot string) (*Env, error) {
	ws, err := OpenWorkspace(volumeRoot, run.Owner())
	if err != nil {
		return nil, err
	}
	e := &Env{Run: run, WS: ws, VolumeRoot: volumeRoot, DataDir: contract.DataDirPath}
	if err := e.writeManifest(); err != nil {
		return nil, err
	}
	return e, nil
}

func (e *Env) logf(format string, args ...any) {
	if e.Log != nil {
		fmt.Fprintf(e.Log, format+"\n", args...)
	}
}

func (e *Env) progress(stage string, done, total int) {
	e.progressWith(stage, done, total, nil)
}

func (e *Env) progressWith(stage string, done, total int, metrics map[string]float64) {
	if e.Progress != nil {
		e.Progress(ProgressUpdate{Stage: stage, Done: done, Total: total, Metrics: metrics})
	}
}

// Task loads the run's data source.
func (e *Env) Task() (*task.Task, error) {
	if e.task != nil {
		return e.task, nil
	}
	d := e.Run.Spec.Data
	var t *task.Task
	var err error
	switch {
	case d.Builtin != "":
		t, err = task.Builtin(d.Builtin)
	case d.Path != "":
		t, err = task.Load(filepath.Join(e.VolumeRoot, d.Path))
	case d.ConfigMap != nil:
		// The controller mounts the ConfigMap's keys under their own names in the data folder.
		t, err = task.LoadWith(e.DataDir, task.Files{Prompts: d.ConfigMap.PromptsKey, Eval: d.ConfigMap.EvalKey})
	default:
		err = errors.New("spec.data: set one of builtin, configMap or path")
	}
	if err != nil {
		return nil, fmt.Errorf("spec.data: %w", err)
	}
	if need := int(e.Run.Spec.Budget.Pairs); need > len(t.Prompts) {
		return nil, fmt.Errorf("spec.budget.pairs is %d but task %s has %d prompts (each prompt is used once): lower spec.budget.pairs",
			need, t.Name, len(t.Prompts))
	}
	e.task = t
	return t, nil
}

// PhasePrompts are the prompts phase k (1-based) samples: a seeded permutation of the
// task's prompts, cut into F consecutive blocks of pairs/F, so that no prompt is used twice.
func (e *Env) PhasePrompts(k int) ([]string, error) {
	t, err := e.Task()
	if err != nil {
		return nil, err
	}
	perm := rand.New(rand.NewPCG(e.Run.Seed, 0x70726f6d707473)).Perm(len(t.Prompts))
	n := e.Run.PairsPerPhase()
	out := make([]string, n)
	for i := range out {
		out[i] = t.Prompts[perm[(k-1)*n+i]]
	}
	return out, nil
}

// ShardRange is the half-open range of items [lo, hi) that shard i of n owns. It is part of the
// stage contract (docs/stage-contract.md): every implementation splits the rows alike.
func ShardRange(items, i, n int) (int, int) {
	return items * i / n, items * (i + 1) / n
}

// streamSeed derives an independent random stream for (run seed, purpose, phase).
func (e *Env) streamSeed(purpose string, k int) uint64 {
	h := e.Run.Seed ^ 0x9e3779b97f4a7c15
	for _, c := range []byte(purpose) {
		h = (h ^ uint64(c)) * 0x100000001b3
	}
	return h ^ uint64(k)*0xbf58476d1ce4e5b9
}

// once runs a stage unless its done marker exists, records timing, and writes the
// marker last, so a stage killed half-way is simply run again.
func (e *Env) once(k int, stage string, index int, run func(*v1alpha1.StageResult) error) (v1alpha1.StageResult, error) {
	done := e.WS.DonePath(k, stage, index)
	var prev v1alpha1.StageResult
	if err := readJSON(done, &prev); err == nil {
		return prev, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return prev, fmt.Errorf("stage marker %s is corrupt (%v): delete it to rerun the stage", done, err)
	}
	start := time.Now()
	r := v1alpha1.StageResult{Stage: stage, Phase: int32(k), Index: int32(max(index, 0))}
	if err := run(&r); err != nil {
		return r, fmt.Errorf("phase %d %s: %w", k, stage, err)
	}
	r.DurationSeconds = time.Since(start).Seconds()
	return r, writeJSONAtomic(done, r)
}

// Done reports whether a stage finished, and its result.
func (e *Env) Done(k int, stage string, index int) (v1alpha1.StageResult, bool) {
	var r v1alpha1.StageResult
	err := readJSON(e.WS.DonePath(k, stage, index), &r)
	return r, err == nil
}

// Members returns the ensemble's adapters after phase k (k = 0: the initial adapters).
func (e *Env) Members(k int) ([]*model.Adapter, error) {
	b, err := e.LoadBase()
	if err != nil {
		return nil, err
	}
	if k == 0 {
		return b.Init, nil
	}
	out := make([]*model.Adapter, e.Run.Members())
	for m := range out {
		a, err := model.LoadAdapterFor(filepath.Join(e.WS.MemberDir(k, m), "adapter.safetensors"), b.Weights.Config)
		if err != nil {
			return nil, fmt.Errorf("member %d after phase %d: %w", m, k, err)
		}
		out[m] = a
	}
	return out, nil
}

// Policy is the merged ensemble after phase k: the behavior model of phase k+1.
func (e *Env) Policy(k int) (*model.Weights, error) {
	b, err := e.LoadBase()
	if err != nil {
		return nil, err
	}
	ms, err := e.Members(k)
	if err != nil {
		return nil, err
	}
	return model.MergeMean(b.Weights, ms), nil
}

// Reference is the reference model of phase k, and whether it is the behavior model.
func (e *Env) Reference(k int, behavior *model.Weights) (*model.Weights, bool, error) {
	tr := e.Run.Spec.TrustRegion
	switch tr.Reference {
	case v1alpha1.ReferenceBehavior:
		return behavior, true, nil
	case v1alpha1.ReferenceInitial:
		if k == 1 {
			return behavior, true, nil
		}
		w, err := e.Policy(0)
		return w, false, err
	case v1alpha1.ReferenceFixed:
		dir := filepath.Join(e.VolumeRoot, *tr.FixedCheckpoint)
		if v1alpha1.IsModelURI(*tr.FixedCheckpoint) {
			var err error
			if dir, err = e.fetchModel("spec.trustRegion.fixedCheckpoint", *tr.FixedCheckpoint, e.WS.FixedInDir()); err != nil {
				return nil, false, err
			}
		}
		w, err := model.LoadWeights(dir)
		if err != nil {
			return nil, false, fmt.Errorf("spec.trustRegion.fixedCheckpoint: %w", err)
		}
		return w, false, nil
	case v1alpha1.ReferenceEMA:
		if k == 1 {
			return behavior, true, nil
		}
		// ref_k = (1 - alpha) ref_{k-1} + alpha behavior_k, from the stored ref_{k-1} so
		// that every shard and every process computes the same bits.
		prev, err := e.storedReference(k - 1)
		if err != nil {
			return nil, false, err
		}
		return model.ApplyEMA(prev, behavior, e.Run.EMAAlpha), false, nil
	}
	return nil, false, fmt.Errorf("spec.trustRegion.reference: unknown %q", tr.Reference)
}

// storedReference loads phase k's EMA reference, which phase k's sample stage saved.
func (e *Env) storedReference(k int) (*model.Weights, error) {
	if k == 1 {
		return e.Policy(0)
	}
	w, err := model.LoadWeights(e.WS.ReferenceDir(k))
	if err != nil {
		return nil, fmt.Errorf("EMA reference of phase %d (written by its sample stage): %w", k, err)
	}
	return w, nil
}
