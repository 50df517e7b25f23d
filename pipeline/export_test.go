package pipeline

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/storage"
	"github.com/bpo-dev/bpo/storage/storagetest"
	"github.com/bpo-dev/bpo/trainer/model"
	"github.com/bpo-dev/bpo/trainer/tokenizer"
)

// exportRun runs a whole two-phase run (the local runner's RunAll) on a folder with spec.output
// set to out, every phase exported, and returns its Env. The base model carries a tokenizer
// config, which the export must copy.
func exportRun(t *testing.T, name string, out *v1alpha1.OutputSpec) *Env {
	t.Helper()
	vol := newVolume(t)
	tokCfg := []byte(`{"tokenizer_class": "byte", "model_max_length": 64}`)
	if err := os.WriteFile(filepath.Join(vol, "models", "tiny", tokenizer.ConfigFile), tokCfg, 0o644); err != nil {
		t.Fatal(err)
	}
	b := makeRun(name)
	b.ar.Spec.Output = out
	e := b.Env(t, vol)
	var stages []string
	if _, err := e.RunAll(RunHooks{StageDone: func(k int, stage string) error {
		if stage == v1alpha1.StageExport {
			stages = append(stages, stage)
		}
		return nil
	}}); err != nil {
		t.Fatal(err)
	}
	if want := map[bool]int{false: 1, true: 2}[out.EveryPhase]; len(stages) != want {
		t.Fatalf("ran %d export stages, want %d", len(stages), want)
	}
	return e
}

// checkExport checks the export of phase k in dst (<uri>/<run>[/phase-<k>]): both folders are
// complete; the policy loads with our loader and is the dense merge of the ensemble after phase
// k (rounded to F32, the file's type), with the base model's tokenizer; the adapter loads with LoadPEFT and base +
// adapter is the policy within float precision.
func checkExport(t *testing.T, e *Env, dst *storage.Store, k int) {
	t.Helper()
	ctx := context.Background()
	local := t.TempDir()
	if _, err := storage.Stage(ctx, dst, "", local, "policy/", "adapter/"); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"policy", "adapter"} {
		var mark exportMark
		if err := readJSON(filepath.Join(local, d, ".complete"), &mark); err != nil || mark.Run != e.Run.Name || mark.Phase != k {
			t.Fatalf("%s/%s/.complete: %+v, %v; want run %s phase %d", dst, d, mark, err, e.Run.Name, k)
		}
	}
	got, err := model.LoadWeights(filepath.Join(local, "policy"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := e.Policy(k)
	if err != nil {
		t.Fatal(err)
	}
	for name, w := range want.Tensors { // stored as F32: equal to the merge rounded to float32
		if !slices.EqualFunc(got.Tensors[name].Data, w.Data, func(g, w float64) bool { return g == float64(float32(w)) }) {
			t.Fatalf("exported policy of phase %d: %s differs from the merged ensemble", k, name)
		}
	}
	tok, err := tokenizer.FromDir(filepath.Join(local, "policy"))
	if err != nil || tok.VocabSize() != 257 {
		t.Fatalf("exported tokenizer: %v, %v", tok, err)
	}
	base, err := e.LoadBase()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range tokenizerFiles {
		src, err := os.ReadFile(filepath.Join(base.Dir, name))
		if err != nil {
			continue
		}
		if got, err := os.ReadFile(filepath.Join(local, "policy", name)); err != nil || string(got) != string(src) {
			t.Fatalf("the base model's %s was not copied: %q, %v", name, got, err)
		}
	}
	a, err := model.LoadPEFT(filepath.Join(local, "adapter"), base.Weights.Config)
	if err != nil {
		t.Fatal(err)
	}
	viaAdapter := model.MergeMean(base.Weights, []*model.Adapter{a})
	worst := 0.0
	for name, w := range want.Tensors {
		for i, v := range w.Data {
			worst = max(worst, math.Abs(viaAdapter.Tensors[name].Data[i]-v))
		}
	}
	if worst > 1e-5 {
		t.Fatalf("base + exported adapter differs from the exported policy by %g", worst)
	}
}

// exportResult is the export stage's StageResult of phase k, from its done marker.
func exportResult(t *testing.T, e *Env, k int) v1alpha1.StageResult {
	t.Helper()
	r, ok := e.Done(k, v1alpha1.StageExport, -1)
	if !ok {
		t.Fatalf("phase %d has no export done marker", k)
	}
	return r
}

// TestExportToFolder exports to a file:// output (what a local run without a bucket uses):
// the last phase at <uri>/<run>/, the first (everyPhase) at <uri>/<run>/phase-1/.
func TestExportToFolder(t *testing.T) {
	dir := t.TempDir()
	e := exportRun(t, "exp", &v1alpha1.OutputSpec{URI: "file://" + dir + "/models", EveryPhase: true})
	ctx := context.Background()
	st, err := OpenOutput(ctx, e.Run.Spec.Output, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	final, _ := st.Sub("exp")
	checkExport(t, e, final, 2)
	if ok, _ := final.Exists(ctx, "policy/"+tokenizer.ConfigFile); !ok {
		t.Fatal("the base model's tokenizer_config.json is not in the export")
	}
	first, _ := st.Sub("exp/phase-1")
	checkExport(t, e, first, 1)
	r := exportResult(t, e, 2)
	if r.Outputs == nil || r.Outputs.Policy != "file://"+dir+"/models/exp/policy" || r.Outputs.Adapter != "file://"+dir+"/models/exp/adapter" {
		t.Fatalf("export result outputs: %+v", r.Outputs)
	}
	if r1 := exportResult(t, e, 1); r1.Outputs == nil || !strings.HasSuffix(r1.Outputs.Policy, "/exp/phase-1/policy") {
		t.Fatalf("phase 1 export result outputs: %+v", r1.Outputs)
	}

	// Exporting again (the done marker lost, e.g. a retried pod that published nothing) rewrites
	// the same export and completes it again.
	if err := os.Remove(e.WS.DonePath(2, v1alpha1.StageExport, -1)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Export(ctx, 2); err != nil {
		t.Fatal(err)
	}
	checkExport(t, e, final, 2)
}

// TestExportTokenizerOverride: spec.model.tokenizer names the tokenizer, so the exported
// folder records it even though the base model's config says otherwise.
func TestExportTokenizerOverride(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(src, tokenizer.ConfigFile), []byte(`{"tokenizer_class": "GPT2Tokenizer", "eos_token": "x"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	e := &Env{Run: &Run{}}
	e.Run.Spec.Model.Tokenizer = v1alpha1.TokenizerByte
	if err := e.copyTokenizer(src, dst); err != nil {
		t.Fatal(err)
	}
	var cfg map[string]string
	if err := readJSON(filepath.Join(dst, tokenizer.ConfigFile), &cfg); err != nil || cfg["tokenizer_class"] != "byte" || cfg["eos_token"] != "x" {
		t.Fatalf("tokenizer_config.json = %v, %v; want class byte, other keys kept", cfg, err)
	}
}

// TestExportToObjectStore is `bpo run` exporting to an s3:// bucket (versitygw) with credentials
// of its own (BPO_OUTPUT_*): the exported folders load and match the run's policy, the results
// name the URIs without credentials, and a wrong secret fails the stage naming spec.output
// without echoing the secret.
func TestExportToObjectStore(t *testing.T) {
	srv := storagetest.Start(t)
	uri := srv.NewBucket(t) + "/models"
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv(v1alpha1.EnvOutputAccessKeyID, srv.AccessKey)
	t.Setenv(v1alpha1.EnvOutputSecretAccessKey, srv.SecretKey)
	out := &v1alpha1.OutputSpec{URI: uri, Endpoint: srv.Endpoint, Region: storagetest.Region}
	e := exportRun(t, "exps3", out)
	ctx := context.Background()
	st, err := OpenOutput(ctx, out, os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	final, _ := st.Sub("exps3")
	checkExport(t, e, final, 2)
	if ok, _ := st.Exists(ctx, "exps3/phase-1/policy/.complete"); ok {
		t.Fatal("phase 1 was exported without spec.output.everyPhase")
	}
	r := exportResult(t, e, 2)
	if r.Outputs == nil || r.Outputs.Policy != uri+"/exps3/policy" || r.Outputs.Adapter != uri+"/exps3/adapter" {
		t.Fatalf("export result outputs: %+v", r.Outputs)
	}
	raw, _ := json.Marshal(r)
	if strings.Contains(string(raw), srv.SecretKey) || strings.Contains(string(raw), srv.AccessKey) {
		t.Fatalf("the export result carries a credential: %s", raw)
	}

	// A wrong secret: the stage fails at the ping, names spec.output and keeps the secret out.
	if err := os.Remove(e.WS.DonePath(2, v1alpha1.StageExport, -1)); err != nil {
		t.Fatal(err)
	}
	const wrong = "not-the-secret-0123456789"
	t.Setenv(v1alpha1.EnvOutputSecretAccessKey, wrong)
	_, err = e.Export(ctx, 2)
	if err == nil || !strings.Contains(err.Error(), "spec.output") || strings.Contains(err.Error(), wrong) {
		t.Fatalf("export with a wrong secret: %v; want an error naming spec.output without the secret", err)
	}
	// Half the key pair is refused before any request.
	t.Setenv(v1alpha1.EnvOutputSecretAccessKey, "")
	if _, err := e.Export(ctx, 2); err == nil || !strings.Contains(err.Error(), v1alpha1.EnvOutputSecretAccessKey) {
		t.Fatalf("export with half a key pair: %v", err)
	}
}
