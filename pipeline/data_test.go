package pipeline

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bpo-dev/bpo/api/v1alpha1"
)

// TestConfigMapDataKeys: with spec.data.configMap the stage reads the ConfigMap's keys under
// their own names from the data folder (where the controller mounts them), and a missing or
// corrupt key is reported under its name.
func TestConfigMapDataKeys(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, lines []string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var prompts, eval []string
	for i := range 20 {
		prompts = append(prompts, fmt.Sprintf(`{"prompt": "The service %d"}`, i))
	}
	for i := range 8 {
		eval = append(eval, fmt.Sprintf(`{"prompt": "I loved %d", "reference": " it, really."}`, i))
	}
	write("my-prompts.jsonl", prompts)
	write("held-out.jsonl", eval)

	env := func(promptsKey, evalKey string) *Env {
		b := makeRun("cm")
		b.ar.Spec.Data = v1alpha1.DataSpec{ConfigMap: &v1alpha1.ConfigMapDataSource{Name: "reviews", PromptsKey: promptsKey, EvalKey: evalKey}}
		e := b.Env(t, newVolume(t))
		e.DataDir = dir
		return e
	}
	task, err := env("my-prompts.jsonl", "held-out.jsonl").Task()
	if err != nil {
		t.Fatal(err)
	}
	if len(task.Prompts) != 20 || len(task.Eval) != 8 || task.Prompts[3] != "The service 3" || task.Eval[0].Reference != " it, really." {
		t.Fatalf("task %d prompts %d eval: %+v", len(task.Prompts), len(task.Eval), task.Eval[0])
	}

	_, err = env("prompts.jsonl", "held-out.jsonl").Task()
	if err == nil || !strings.Contains(err.Error(), "spec.data") || !strings.Contains(err.Error(), "prompts.jsonl") {
		t.Errorf("missing key: %v", err)
	}
	write("bad.jsonl", []string{`{"prompt": "ok"}`, `{"prompt": `})
	_, err = env("bad.jsonl", "held-out.jsonl").Task()
	if err == nil || !strings.Contains(err.Error(), "bad.jsonl:2") {
		t.Errorf("corrupt key: %v", err)
	}
}
