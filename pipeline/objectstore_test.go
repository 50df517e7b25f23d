package pipeline

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/stage/contract"
	"github.com/bpo-dev/bpo/storage"
	"github.com/bpo-dev/bpo/storage/storagetest"
)

func TestStageNeeds(t *testing.T) {
	for _, c := range []struct {
		stage string
		k     int
		key   string
		want  bool
	}{
		{"sample", 2, "owner.json", true},
		{"sample", 2, "base/model.safetensors", true},
		{"sample", 2, "base-in/.complete", true},
		{"sample", 2, "phase-1/sample-0.done.json", true},
		{"sample", 2, "phase-1/pairs/shard-0.jsonl", true},
		{"sample", 2, "phase-1/members/member-0/adapter.safetensors", true},
		{"sample", 2, "phase-1/members/member-0/optimizer.safetensors", true},
		{"sample", 3, "phase-1/members/member-0/adapter.safetensors", false},
		{"sample", 3, "phase-1/members/member-0/rng.json", true},
		{"sample", 2, "phase-1/behavior/model.safetensors", false},
		{"sample", 2, "phase-2/behavior-adapter/adapter_config.json", false},
		{"sample", 2, "phase-1/reference/model.safetensors", true}, // EMA starts from it
		{"sample", 3, "phase-1/reference/model.safetensors", false},
		{"train", 2, "phase-1/reference/model.safetensors", false},
		{"eval", 2, "phase-2/members/member-1/adapter.safetensors", true},
		{"eval", 2, "phase-1/members/member-1/adapter.safetensors", true}, // fresh-pair accuracy
		{"eval", 0, "phase-1/members/member-1/adapter.safetensors", false},
		{"report", 3, "phase-1/eval/result.json", true},
		{"report", 3, "phase-x/behavior/model.safetensors", true}, // not a phase folder
	} {
		if got := stageNeeds(c.stage, c.k, c.key); got != c.want {
			t.Errorf("stageNeeds(%s, %d, %s) = %v, want %v", c.stage, c.k, c.key, got, c.want)
		}
	}
}

func TestOutputKind(t *testing.T) {
	for key, want := range map[string]int{
		"owner.json":                         outputSkip,
		"run.yaml":                           outputData,
		"phase-1/sample-shards.json":         outputClaim,
		"phase-1/label-shards.json":          outputClaim,
		"phase-1/samples/x-shards.json":      outputData,
		"phase-1/sample-0.done.json":         outputMarker,
		"phase-2/report.done.json":           outputMarker,
		"base/.complete":                     outputMarker,
		"base/model.safetensors":             outputData,
		"phase-1/members/member-0/rng.json":  outputData,
		"phase-1/samples/shard-0.jsonl":      outputData,
		"annotation-cache/gold/ab/cd.json":   outputData,
		"phase-1/eval/result.json":           outputData,
		"phase-1/annotations/gold-eval.json": outputData,
	} {
		if got := outputKind(key); got != want {
			t.Errorf("outputKind(%s) = %d, want %d", key, got, want)
		}
	}
}

// s3Workspace starts a real S3 server (versitygw) with a fresh bucket and returns the workspace
// spec for it; the credentials reach the store only through the environment, as in a pod.
func s3Workspace(t *testing.T) v1alpha1.WorkspaceSpec {
	t.Helper()
	srv := storagetest.Start(t)
	uri := srv.NewBucket(t) + "/runs"
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	return v1alpha1.WorkspaceSpec{ObjectStore: &v1alpha1.WorkspaceObjectStore{URI: uri, Endpoint: srv.Endpoint, Region: storagetest.Region}}
}

// uploadFolder copies a local folder into the store under prefix, as a user would upload a model.
func uploadFolder(t *testing.T, ws v1alpha1.WorkspaceSpec, dir, prefix string) {
	t.Helper()
	ctx := context.Background()
	st, err := OpenObjectStore(ctx, ws.ObjectStore)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	err = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return st.Write(ctx, prefix+"/"+filepath.ToSlash(rel), data)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// storeRun is a run whose workspace is ws; its Env is opened by the caller.
func storeRun(t *testing.T, b *runBuilder, ws v1alpha1.WorkspaceSpec) *Run {
	t.Helper()
	ar := b.ar.DeepCopy()
	ar.Spec.Workspace = ws
	ar.SetDefaults()
	if errs := ar.ValidateLocal(); len(errs) > 0 {
		t.Fatalf("invalid test run: %v", errs.ToAggregate())
	}
	run, err := NewRun(ar)
	if err != nil {
		t.Fatal(err)
	}
	return run
}

// folderTable runs b on a volume folder: the reference a run on a store must reproduce.
func folderTable(t *testing.T, b *runBuilder, vol string) (string, *EvalResult) {
	t.Helper()
	e := b.Env(t, vol)
	sums, err := e.RunAll(RunHooks{})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := e.LoadEval(e.Run.Phases())
	if err != nil {
		t.Fatal(err)
	}
	return FormatTable(sums), ev
}

// storeKeys lists the run's folder in the store.
func storeKeys(t *testing.T, ws v1alpha1.WorkspaceSpec, run string) []string {
	t.Helper()
	ctx := context.Background()
	st, err := OpenObjectStore(ctx, ws.ObjectStore)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rs, _ := st.Sub(run)
	objs, err := rs.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range objs {
		keys = append(keys, o.Key)
	}
	return keys
}

// TestRunAllOnObjectStore is `bpo run` with an s3:// workspace: one local folder for the whole
// run, published after every stage. It reproduces the run on a folder exactly, and the bucket
// then holds the workspace's layout.
func TestRunAllOnObjectStore(t *testing.T) {
	vol := newVolume(t)
	b := makeRun("s3run").Shards(2, 1)
	want, _ := folderTable(t, b, vol)

	ws := s3Workspace(t)
	uploadFolder(t, ws, filepath.Join(vol, "models"), "models") // spec.model.path, relative to the store
	run := storeRun(t, b, ws)
	ctx := context.Background()
	scratch := t.TempDir()
	sess, err := OpenStoreSession(ctx, run, scratch, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	e, err := NewEnv(run, scratch)
	if err != nil {
		t.Fatal(err)
	}
	e.Scorer = letterScorer{}
	var published []string
	sums, err := e.RunAll(RunHooks{StageDone: func(k int, stage string) error {
		_, err := sess.Publish(ctx)
		published = append(published, stage)
		return err
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sess.Publish(ctx); err != nil {
		t.Fatal(err)
	}
	if got := FormatTable(sums); got != want {
		t.Fatalf("run on s3:// differs from the run on a folder:\n%s\nwant\n%s", got, want)
	}
	if len(published) < 8 {
		t.Fatalf("published after %d stages (%v), want every stage", len(published), published)
	}
	// The bucket holds the workspace as a volume would: compare with the local folder.
	keys := storeKeys(t, ws, "s3run")
	local, err := snapshot(filepath.Join(scratch, "s3run"))
	if err != nil {
		t.Fatal(err)
	}
	for k := range local {
		if !slices.Contains(keys, k) {
			t.Errorf("%s was written locally but not published", k)
		}
	}
	for _, want := range []string{"owner.json", "run.yaml", "report.md", "phase-2/report.done.json", "phase-1/sample-shards.json",
		"phase-1/sample-1.done.json", "phase-2/members/member-1/adapter.safetensors", "phase-0/eval/result.json"} {
		if !slices.Contains(keys, want) {
			t.Errorf("bucket lacks %s; it holds %v", want, keys)
		}
	}

	// A second run of the same name but another uid is refused by the store's owner.json.
	other := storeRun(t, b, ws)
	other.UID = "someone-else"
	if _, err := OpenStoreSession(ctx, other, t.TempDir(), nil); err == nil || !strings.Contains(err.Error(), "belongs to run") {
		t.Fatalf("a foreign run opened the workspace: %v", err)
	}
}

// TestStagePodsOnObjectStore runs every stage the way the operator's pods do with an object-store
// workspace: each pod in a fresh, empty folder, staging only what its stage reads (stageNeeds),
// publishing what it wrote. The base model comes in by URI. The run reproduces the folder run,
// which shows that every stage found its inputs.
func TestStagePodsOnObjectStore(t *testing.T) {
	vol := newVolume(t)
	b := makeRun("pods").Shards(2, 2).Reference(v1alpha1.ReferenceEMA)
	_, wantEval := folderTable(t, b, vol)

	ws := s3Workspace(t)
	uploadFolder(t, ws, filepath.Join(vol, "models", "tiny"), "models/tiny")
	pb := makeRun("pods").Shards(2, 2).Reference(v1alpha1.ReferenceEMA)
	pb.ar.Spec.Model = v1alpha1.ModelSpec{URI: ws.ObjectStore.URI + "/models/tiny"}
	// The export pod writes to the same bucket under another prefix, with the workspace's
	// credentials (no BPO_OUTPUT_* set: the standard chain).
	pb.ar.Spec.Output = &v1alpha1.OutputSpec{URI: ws.ObjectStore.URI + "/exports", Endpoint: ws.ObjectStore.Endpoint, Region: ws.ObjectStore.Region}
	run := storeRun(t, pb, ws)
	ctx := context.Background()
	pods := 0
	for k := int(run.Spec.FirstPhase()); k <= run.Phases(); k++ {
		for _, stage := range run.Spec.Stages(int32(k)) {
			n := int(contract.Completions(&run.Spec, stage))
			for i := range n {
				c := StageCall{Stage: stage, Phase: k, Index: i, Shards: n}
				if _, err := RunStageInStore(ctx, run, t.TempDir(), c, func(e *Env) { e.Scorer = letterScorer{} }); err != nil {
					t.Fatalf("pod %+v: %v", c, err)
				}
				pods++
			}
		}
	}
	// Read the final evaluation back from the bucket, as `bpo report` would after staging.
	dir := t.TempDir()
	st, err := OpenObjectStore(ctx, ws.ObjectStore)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := storage.Stage(ctx, st, "pods", dir, "phase-2/eval/result.json"); err != nil {
		t.Fatal(err)
	}
	var got EvalResult
	if err := readJSON(filepath.Join(dir, "phase-2/eval/result.json"), &got); err != nil {
		t.Fatal(err)
	}
	if got.WinRate != wantEval.WinRate || got.GoldReward != wantEval.GoldReward || got.KLToInitial != wantEval.KLToInitial {
		t.Fatalf("after %d pods on s3://, phase 2 eval = %+v, on a folder %+v", pods, got, *wantEval)
	}
	keys := storeKeys(t, ws, "pods")
	for _, want := range []string{"base-in/.complete", "base-in/model.safetensors", "phase-2/reference/model.safetensors", "phase-2/label-1.done.json", "report.md", "phase-2/export.done.json"} {
		if !slices.Contains(keys, want) {
			t.Errorf("bucket lacks %s; it holds %v", want, keys)
		}
	}
	// The export pod found the final members (stageNeeds) and exported the policy they make.
	fe := b.Env(t, vol)
	out, err := st.Sub("exports/pods")
	if err != nil {
		t.Fatal(err)
	}
	checkExport(t, fe, out, 2)
}
