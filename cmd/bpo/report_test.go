package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bpo-dev/bpo/api/v1alpha1"
)

// The report as a cluster runs it: every stage command in the controller's order (the baseline
// eval, phase 1, then the report stage with the stage flags), then `bpo report --workspace`
// renders the same report.md again from the run's folder alone.
func TestReportStageAndRerender(t *testing.T) {
	vol, config := newStageVolume(t)
	data, err := os.ReadFile(config)
	if err != nil {
		t.Fatal(err)
	}
	data = bytes.Replace(data, []byte("spec:\n"), []byte("spec:\n  trustRegion: {phases: 1}\n"), 1)
	if err := os.WriteFile(config, data, 0o644); err != nil {
		t.Fatal(err)
	}
	common := []string{"--config", config, "--workspace", vol, "--termination-log", ""}
	steps := []struct {
		stage string
		args  []string
	}{
		{"eval", []string{"--phase", "0"}},
		{"sample", []string{"--phase", "1", "--shards", "2", "--index", "0"}},
		{"sample", []string{"--phase", "1", "--shards", "2", "--index", "1"}},
		{"label", []string{"--phase", "1", "--index", "0"}},
		{"train", []string{"--phase", "1", "--index", "0"}},
		{"train", []string{"--phase", "1", "--index", "1"}},
		{"eval", []string{"--phase", "1"}},
	}
	for _, s := range steps {
		if _, err := runStageCmd(t, s.stage, append(append([]string{}, common...), s.args...)...); err != nil {
			t.Fatalf("%s %v: %v", s.stage, s.args, err)
		}
	}

	run := func(args ...string) (string, error) {
		var out bytes.Buffer
		c := reportCmd()
		c.SetArgs(args)
		c.SetOut(&out)
		err := c.Execute()
		return out.String(), err
	}
	if _, err := run("--config", config, "--workspace", vol, "--phase", "2", "--termination-log", ""); err == nil || !strings.Contains(err.Error(), "--phase") {
		t.Fatalf("a report stage of a phase other than the last must be refused naming --phase: %v", err)
	}
	term := filepath.Join(t.TempDir(), "termination-log")
	if _, err := run("--config", config, "--workspace", vol, "--phase", "1", "--termination-log", term); err != nil {
		t.Fatal(err)
	}
	var res v1alpha1.StageResult
	msg, err := os.ReadFile(term)
	if err != nil || json.Unmarshal(msg, &res) != nil {
		t.Fatalf("termination log %q: %v", msg, err)
	}
	if res.Stage != v1alpha1.StageReport || res.Phase != 1 || res.Report != "stage-test/report.md" || !strings.Contains(res.Message, "win rate") {
		t.Fatalf("report stage result: %+v", res)
	}
	folder := filepath.Join(vol, "stage-test")
	want, err := os.ReadFile(filepath.Join(folder, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(folder, "report.md")); err != nil {
		t.Fatal(err)
	}
	out, err := run("--workspace", folder)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(folder, "report.md"))
	if err != nil || !bytes.Equal(got, want) || !strings.Contains(out, "report: "+filepath.Join(folder, "report.md")) {
		t.Fatalf("bpo report --workspace: output %q, same report %v (%v)", out, bytes.Equal(got, want), err)
	}
	if _, err := run("--workspace", t.TempDir()); err == nil || !strings.Contains(err.Error(), "run.yaml is missing") {
		t.Fatalf("an empty folder is not a run folder; the error should say what is missing: %v", err)
	}
	if _, err := run("--workspace", vol); err == nil || !strings.Contains(err.Error(), "pass the run's own folder") {
		t.Fatalf("the volume root (holding another manifest) is not the run's folder: %v", err)
	}
}
