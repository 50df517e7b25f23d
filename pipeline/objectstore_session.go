package pipeline

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/stage/contract"
	"github.com/bpo-dev/bpo/storage"
)

// StoreSession keeps a local folder (<scratch>/<run>) in step with the run's folder in an
// object store: opened, it has staged what its caller reads; Publish uploads what was written
// since (shard plans create-only, data, then markers).
type StoreSession struct {
	store, run *storage.Store
	local      string
	before     map[string]stamp
}

// OpenStoreSession opens spec.workspace.objectStore, claims the run's folder (owner.json,
// create-only), stages every object of it that keep accepts (nil: all) into <scratch>/<run>,
// and the spec's workspace paths (model.path, data.path, a fixedCheckpoint path) from the
// store's root into <scratch>/<path>, as they would sit on a volume.
func OpenStoreSession(ctx context.Context, run *Run, scratch string, keep func(key string) bool) (*StoreSession, error) {
	spec := &run.Spec
	st, err := OpenObjectStore(ctx, spec.Workspace.ObjectStore)
	if err != nil {
		return nil, err
	}
	s := &StoreSession{store: st, local: filepath.Join(scratch, run.Name)}
	if err := s.open(ctx, run, scratch, keep); err != nil {
		_ = st.Close()
		return nil, err
	}
	return s, nil
}

func (s *StoreSession) open(ctx context.Context, run *Run, scratch string, keep func(string) bool) error {
	var err error
	if s.run, err = s.store.Sub(run.Name); err != nil {
		return err
	}
	if err := claimOwner(ctx, s.run, run.Owner()); err != nil {
		return err
	}
	objs, err := s.run.List(ctx, "")
	if err != nil {
		return err
	}
	var keys []string
	for _, o := range objs {
		if keep == nil || keep(o.Key) {
			keys = append(keys, o.Key)
		}
	}
	if _, err := storage.Stage(ctx, s.run, "", s.local, keys...); err != nil {
		return fmt.Errorf("stage the workspace: %w", err)
	}
	for _, p := range specPaths(&run.Spec) {
		if _, err := storage.Stage(ctx, s.store, "", scratch, strings.TrimSuffix(p.path, "/")+"/"); err != nil {
			return fmt.Errorf("%s: %w", p.field, err)
		}
	}
	s.before, err = snapshot(s.local)
	return err
}

// specPath is a folder of the workspace that a spec field names.
type specPath struct{ field, path string }

// specPaths are the workspace folders the spec names (relative to the workspace root).
func specPaths(spec *v1alpha1.AlignmentRunSpec) []specPath {
	var out []specPath
	if p := spec.Model.Path; p != "" {
		out = append(out, specPath{"spec.model.path", p})
	}
	if p := spec.Data.Path; p != "" {
		out = append(out, specPath{"spec.data.path", p})
	}
	if p := spec.TrustRegion.FixedCheckpoint; p != nil && *p != "" && !v1alpha1.IsModelURI(*p) {
		out = append(out, specPath{"spec.trustRegion.fixedCheckpoint", *p})
	}
	return out
}

// Publish uploads what was written under the local folder since the session opened or last
// published.
func (s *StoreSession) Publish(ctx context.Context) (storage.Stats, error) {
	now, err := snapshot(s.local)
	if err != nil {
		return storage.Stats{}, err
	}
	st, err := publishWritten(ctx, s.run, s.local, written(s.before, now))
	if err != nil {
		return st, fmt.Errorf("publish to %s: %w", s.run, err)
	}
	s.before = now
	return st, nil
}

// Close closes the store.
func (s *StoreSession) Close() error { return s.store.Close() }

// StageCall is one pod's share of a stage: what `bpo <stage>` was invoked with.
type StageCall struct {
	Stage        string
	Phase, Index int
	Shards       int // sample, label
}

// RunStage runs one pod's share of a stage on the Env's workspace.
func (e *Env) RunStage(c StageCall) (v1alpha1.StageResult, error) {
	if err := contract.CheckPhase(c.Stage, c.Phase, e.Run.Phases(), e.Run.Spec.ExportsEveryPhase()); err != nil {
		return v1alpha1.StageResult{}, err
	}
	switch c.Stage {
	case v1alpha1.StageSample:
		return e.Sample(c.Phase, c.Index, c.Shards)
	case v1alpha1.StageLabel:
		return e.Label(c.Phase, c.Index, c.Shards)
	case v1alpha1.StageTrain:
		return e.Train(c.Phase, c.Index)
	case v1alpha1.StageEval:
		return e.Eval(c.Phase)
	case v1alpha1.StageReport:
		return e.Report()
	case v1alpha1.StageExport:
		return e.Export(context.Background(), c.Phase)
	}
	return v1alpha1.StageResult{}, fmt.Errorf("unknown stage %q", c.Stage)
}

// RunStageInStore is a stage pod whose workspace is an object store: it stages what the stage
// reads (stageNeeds) into <scratch>/<run> (the pod's emptyDir at /workspace), runs the
// unchanged stage function there, and publishes what it wrote. setup configures the Env
// before the stage runs (data folder, split, progress).
func RunStageInStore(ctx context.Context, run *Run, scratch string, c StageCall, setup func(*Env)) (v1alpha1.StageResult, error) {
	var none v1alpha1.StageResult
	if err := contract.CheckPhase(c.Stage, c.Phase, run.Phases(), run.Spec.ExportsEveryPhase()); err != nil {
		return none, err
	}
	sess, err := OpenStoreSession(ctx, run, scratch, func(key string) bool { return stageNeeds(c.Stage, c.Phase, key) })
	if err != nil {
		return none, err
	}
	defer sess.Close()
	env, err := NewEnv(run, scratch)
	if err != nil {
		return none, err
	}
	if setup != nil {
		setup(env)
	}
	res, err := env.RunStage(c)
	if err != nil {
		return res, err
	}
	if _, err := sess.Publish(ctx); err != nil {
		return res, fmt.Errorf("phase %d %s: %w", c.Phase, c.Stage, err)
	}
	return res, nil
}

// RunPodStage is what a stage pod (`bpo <stage> --config ... --workspace ...`) does: load the
// manifest and run one pod's share of a stage, on the volume mounted at workspace, or, with
// spec.workspace.objectStore, in workspace as a scratch folder staged from and published to
// the bucket (RunStageInStore). setup configures the Env (data folder, split); a progress
// endpoint in the environment (contract.EnvProgressURL) gets the stage's progress.
func RunPodStage(ctx context.Context, config, workspace string, c StageCall, setup func(*Env)) (v1alpha1.StageResult, error) {
	var none v1alpha1.StageResult
	ar, err := LoadRunFile(config)
	if err != nil {
		return none, err
	}
	run, err := NewRun(ar)
	if err != nil {
		return none, err
	}
	withProgress := func(e *Env) {
		if rep := ProgressFromEnv(os.Stderr); rep != nil {
			e.Progress = rep.Update
		}
		if setup != nil {
			setup(e)
		}
	}
	if run.Spec.Workspace.ObjectStore != nil {
		return RunStageInStore(ctx, run, workspace, c, withProgress)
	}
	env, err := NewEnv(run, workspace)
	if err != nil {
		return none, err
	}
	withProgress(env)
	return env.RunStage(c)
}
