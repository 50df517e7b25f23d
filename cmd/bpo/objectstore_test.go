package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/storage"
	"github.com/bpo-dev/bpo/storage/storagetest"
)

// s3Volume starts versitygw with a bucket, puts the volume's models/ into it, and rewrites the
// manifest's workspace to that bucket; the keys reach bpo only through the environment.
func s3Volume(t *testing.T, vol, config string) (*storage.Store, *storagetest.Server) {
	t.Helper()
	srv := storagetest.Start(t)
	uri := srv.NewBucket(t) + "/runs"
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	ctx := context.Background()
	st, err := storage.Open(ctx, uri, storage.Options{Endpoint: srv.Endpoint, Region: storagetest.Region, PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	err = filepath.WalkDir(filepath.Join(vol, "models"), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(vol, p)
		data, _ := os.ReadFile(p)
		return st.Write(ctx, filepath.ToSlash(rel), data)
	})
	if err != nil {
		t.Fatal(err)
	}
	m := strings.Replace(mustRead(t, config), "workspace: {persistentVolumeClaim: {claimName: ws}}",
		"workspace: {objectStore: {uri: \""+uri+"\", endpoint: \""+srv.Endpoint+"\", region: "+storagetest.Region+"}}", 1)
	if err := os.WriteFile(config, []byte(m), 0o644); err != nil {
		t.Fatal(err)
	}
	return st, srv
}

// TestStageCommandOnObjectStore is a stage pod with a bucket for a workspace: /workspace is an
// empty scratch folder, the result reaches the termination log, the outputs the bucket.
func TestStageCommandOnObjectStore(t *testing.T) {
	vol, config := newStageVolume(t)
	st, srv := s3Volume(t, vol, config)
	scratch := t.TempDir()
	term := filepath.Join(t.TempDir(), "termination-log")
	out, err := runStageCmd(t, "sample", "--config", config, "--workspace", scratch, "--phase", "1", "--shards", "2", "--index", "1", "--termination-log", term)
	if err != nil {
		t.Fatal(err)
	}
	var r v1alpha1.StageResult
	if err := json.Unmarshal([]byte(mustRead(t, term)), &r); err != nil || r.Samples != 8 {
		t.Fatalf("result %+v %v", r, err)
	}
	for _, key := range []string{"stage-test/owner.json", "stage-test/phase-1/sample-shards.json", "stage-test/phase-1/samples/shard-1.jsonl", "stage-test/phase-1/sample-1.done.json"} {
		if ok, err := st.Exists(context.Background(), key); !ok || err != nil {
			t.Errorf("bucket lacks %s (%v)", key, err)
		}
	}
	if strings.Contains(out, srv.SecretKey) || strings.Contains(out, srv.AccessKey) {
		t.Fatal("credentials in the stage's output")
	}

	// A wrong secret fails at the start, clearly, and never shows the key.
	t.Setenv("AWS_SECRET_ACCESS_KEY", "not-"+srv.SecretKey)
	_, err = runStageCmd(t, "sample", "--config", config, "--workspace", t.TempDir(), "--phase", "1", "--shards", "2", "--index", "0", "--termination-log", term)
	if err == nil || !strings.Contains(err.Error(), "spec.workspace.objectStore") {
		t.Fatalf("a wrong secret must fail naming the field: %v", err)
	}
	if msg := mustRead(t, term) + err.Error(); strings.Contains(msg, srv.SecretKey) || strings.Contains(msg, srv.AccessKey) {
		t.Fatalf("credentials in the error: %s", msg)
	}
}

// TestRunCommandOnObjectStore is `bpo run` on an s3:// workspace: the whole run, published
// after every stage, with nothing but a temp folder on disk; spec.output exports the final
// models to the same bucket under another prefix (with the workspace's credentials).
func TestRunCommandOnObjectStore(t *testing.T) {
	vol, config := newStageVolume(t)
	st, srv := s3Volume(t, vol, config)
	outURI := strings.TrimSuffix(st.String(), "/runs") + "/exports"
	m := mustRead(t, config) + "  output: {uri: \"" + outURI + "\", endpoint: \"" + srv.Endpoint + "\", region: " + storagetest.Region + "}\n"
	if err := os.WriteFile(config, []byte(m), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	c := runCmd()
	c.SetArgs([]string{"-f", config, "-q"})
	c.SetOut(&out)
	c.SetErr(&out)
	if err := c.Execute(); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "workspace s3://") || strings.Contains(out.String(), srv.SecretKey) {
		t.Fatalf("output:\n%s", out.String())
	}
	for _, key := range []string{"stage-test/report.md", "stage-test/phase-2/report.done.json", "stage-test/phase-2/eval/result.json", "stage-test/run.yaml", "stage-test/phase-2/export.done.json"} {
		if ok, err := st.Exists(context.Background(), key); !ok || err != nil {
			t.Errorf("bucket lacks %s (%v)", key, err)
		}
	}
	if !strings.Contains(out.String(), "policy: "+outURI+"/stage-test/policy\n") {
		t.Fatalf("bpo run does not name the exported policy:\n%s", out.String())
	}
	exports, err := storage.Open(context.Background(), outURI, storage.Options{Endpoint: srv.Endpoint, Region: storagetest.Region, PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	defer exports.Close()
	for _, key := range []string{"stage-test/policy/model.safetensors", "stage-test/policy/config.json", "stage-test/policy/.complete",
		"stage-test/adapter/adapter_model.safetensors", "stage-test/adapter/adapter_config.json", "stage-test/adapter/.complete"} {
		if ok, err := exports.Exists(context.Background(), key); !ok || err != nil {
			t.Errorf("the export lacks %s (%v)", key, err)
		}
	}
}
