package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/pipeline"
	"github.com/bpo-dev/bpo/trainer/model"
)

// newStageVolume writes a workspace volume with a tiny random model and a run manifest.
func newStageVolume(t *testing.T) (vol, config string) {
	t.Helper()
	vol = t.TempDir()
	cfg := model.Config{ModelType: "gpt2", VocabSize: 257, NPositions: 128, NEmbd: 16, NLayer: 1, NHead: 2,
		LayerNormEpsilon: 1e-5, ActivationFunction: "gelu_new", BOSTokenID: 256, EOSTokenID: 256}
	if err := model.SaveWeights(filepath.Join(vol, "models", "tiny"), model.Init(cfg, 3)); err != nil {
		t.Fatal(err)
	}
	config = filepath.Join(vol, "run.yaml")
	manifest := `apiVersion: alignment.bpo.dev/v1alpha1
kind: AlignmentRun
metadata: {name: stage-test, uid: 1234}
spec:
  model: {path: models/tiny}
  data: {builtin: reviews}
  budget: {pairs: 16, pairsPerStep: 4, evalPrompts: 4}
  ensemble: {members: 2, rank: 2, alpha: 4}
  sampler: {maxNewTokens: 4, parallelism: 2}
  workspace: {persistentVolumeClaim: {claimName: ws}}
`
	if err := os.WriteFile(config, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	return vol, config
}

func runStageCmd(t *testing.T, stage string, args ...string) (string, error) {
	var out bytes.Buffer
	c := stageCmd(stage)
	c.SetArgs(args)
	c.SetOut(&out)
	err := c.Execute()
	return out.String(), err
}

func TestStageCommandReadsJobIndexAndWritesTerminationLog(t *testing.T) {
	vol, config := newStageVolume(t)
	term := filepath.Join(t.TempDir(), "termination-log")
	t.Setenv("JOB_COMPLETION_INDEX", "1")
	out, err := runStageCmd(t, "sample", "--config", config, "--workspace", vol, "--phase", "1", "--shards", "2", "--termination-log", term)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(term)
	if err != nil {
		t.Fatal(err)
	}
	var r v1alpha1.StageResult
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	// Shard 1 of 2 owns prompts 4..7 of the phase's 8: 4 prompts x 2 samples.
	if r.Stage != "sample" || r.Index != 1 || r.Phase != 1 || r.Samples != 8 || strings.TrimSpace(out) != string(data) {
		t.Fatalf("result %+v (stdout %q)", r, out)
	}
	if _, err := os.Stat(filepath.Join(vol, "stage-test", "phase-1", "samples", "shard-1.jsonl")); err != nil {
		t.Fatal(err)
	}
	// The workspace now belongs to uid 1234: a run with the same name and another uid is refused.
	other := strings.Replace(mustRead(t, config), "uid: 1234", "uid: 999", 1)
	os.WriteFile(config, []byte(other), 0o644)
	_, err = runStageCmd(t, "sample", "--config", config, "--workspace", vol, "--phase", "1", "--shards", "2", "--termination-log", term)
	if err == nil || !strings.Contains(err.Error(), "belongs to run") {
		t.Fatalf("a stage of another run must not touch this workspace: %v", err)
	}
	var failed v1alpha1.StageResult
	json.Unmarshal([]byte(mustRead(t, term)), &failed)
	if !strings.Contains(failed.Message, "belongs to run") {
		t.Fatalf("the failure must reach the termination log for the controller: %+v", failed)
	}
}

func TestStageCommandBadInput(t *testing.T) {
	vol, config := newStageVolume(t)
	cases := map[string]struct {
		stage string
		args  []string
		want  string
	}{
		"no index":       {"train", []string{"--phase", "1"}, "JOB_COMPLETION_INDEX"},
		"phase too high": {"sample", []string{"--phase", "3", "--index", "0"}, "beyond spec.trustRegion.phases"},
		"phase zero":     {"label", []string{"--phase", "0", "--index", "0"}, "--phase must be >= 1"},
		"member too big": {"train", []string{"--phase", "1", "--index", "5"}, "member index 5"},
		"missing pairs":  {"train", []string{"--phase", "1", "--index", "0"}, "run the label stage first"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			os.Unsetenv("JOB_COMPLETION_INDEX")
			args := append([]string{"--config", config, "--workspace", vol, "--termination-log", ""}, tc.args...)
			_, err := runStageCmd(t, tc.stage, args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want an error containing %q, got %v", tc.want, err)
			}
		})
	}
	if _, err := pipeline.LoadRunFile(filepath.Join(vol, "missing.yaml")); err == nil {
		t.Fatal("a missing manifest must fail")
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
