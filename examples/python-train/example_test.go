// Package pythontrain_test checks the PyTorch train stage of this folder against the stage
// contract and against the Go trainer. It needs a Python 3 with torch and yaml (Debian:
// python3-torch, python3-yaml); without one the tests skip, unless BPO_REQUIRE_TORCH=1, which
// makes them fail instead. BPO_PYTHON names the interpreter; by default the first of python3 on
// PATH and /usr/bin/python3 that imports torch (a pyenv python3 usually does not).
package pythontrain_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/pipeline"
	"github.com/bpo-dev/bpo/stage"
)

// findPython probes once (importing torch takes seconds) for an interpreter with torch and yaml.
var findPython = sync.OnceValues(func() (string, []string) {
	candidates := []string{"python3", "/usr/bin/python3"}
	if p := os.Getenv("BPO_PYTHON"); p != "" {
		candidates = []string{p}
	}
	for _, c := range candidates {
		if err := exec.Command(c, "-c", "import torch, yaml").Run(); err == nil {
			return c, candidates
		}
	}
	return "", candidates
})

// python returns an interpreter that imports torch and yaml, or skips (fails with BPO_REQUIRE_TORCH=1).
func python(t *testing.T) string {
	t.Helper()
	py, candidates := findPython()
	if py != "" {
		return py
	}
	msg := fmt.Sprintf("no Python with torch and yaml among %v (apt-get install python3-torch python3-yaml, or set BPO_PYTHON)", candidates)
	if os.Getenv("BPO_REQUIRE_TORCH") == "1" {
		t.Fatal(msg + "; BPO_REQUIRE_TORCH=1 requires it")
	}
	t.Skip(msg)
	return ""
}

// stageCommand is the example's command line, from any working directory.
func stageCommand(t *testing.T) []string {
	script, err := filepath.Abs("train_stage.py")
	if err != nil {
		t.Fatal(err)
	}
	return []string{python(t), script}
}

// TestPythonUnitTests runs the example's own unit tests (loss formulas checked against
// hand-computed values, AdamW, safetensors layout, Go's random permutation).
func TestPythonUnitTests(t *testing.T) {
	out, err := exec.Command(python(t), "-m", "unittest", "discover", "-s", ".", "-p", "test_*.py", "-v").CombinedOutput()
	t.Logf("\n%s", out)
	if err != nil {
		t.Fatalf("python unittest: %v", err)
	}
}

// TestGoPerm: gorand.py draws Go's math/rand/v2 permutations, so the batch order is the Go stage's.
func TestGoPerm(t *testing.T) {
	py := python(t)
	for _, c := range [][3]uint64{{1, 0, 1}, {1, 2, 10}, {0xfedcba9876543210, 3, 37}, {42, 1 << 63, 1000}} {
		out, err := exec.Command(py, "gorand.py", fmt.Sprint(c[0]), fmt.Sprint(c[1]), fmt.Sprint(c[2])).Output()
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprint(rand.New(rand.NewPCG(c[0], c[1])).Perm(int(c[2])))
		if got := "[" + strings.TrimSpace(string(out)) + "]"; got != want {
			t.Errorf("PCG(%d, %d).Perm(%d): python %s, Go %s", c[0], c[1], c[2], got, want)
		}
	}
}

// TestRunSpecDefaults: runspec.py fills the fields train uses as api/v1alpha1.SetDefaults does, so
// a hand-written run.yaml means the same to both engines.
func TestRunSpecDefaults(t *testing.T) {
	dir := t.TempDir()
	doc := "apiVersion: alignment.bpo.dev/v1alpha1\nkind: AlignmentRun\nmetadata: {name: d}\nspec:\n  model: {builtin: tiny-reviews}\n  data: {builtin: reviews}\n  budget: {pairs: 64}\n  workspace: {path: .}\n"
	path := filepath.Join(dir, "run.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	ar, err := pipeline.LoadRunFile(path)
	if err != nil {
		t.Fatal(err)
	}
	run, err := pipeline.NewRun(ar)
	if err != nil {
		t.Fatal(err)
	}
	s := run.Spec
	want := fmt.Sprintf("%s %g %t %d %d %d %d %d %d %g %g %d %d", run.Loss, run.Beta, *s.Loss.IPOLengthNormalize,
		s.TrustRegion.Phases, s.Budget.PairsPerStep, s.Budget.EpochsPerPhase, s.Ensemble.Members, s.Ensemble.Rank,
		s.Ensemble.Alpha, run.LR, run.MaxGradNorm, run.Seed, run.TotalSteps())
	out, err := exec.Command(python(t), "-c", `import runspec; s = runspec.load("`+path+`")
print(s.loss, "%g" % s.beta, str(s.ipo_length_normalize).lower(), s.phases, s.pairs_per_step, s.epochs_per_phase,
      s.members, s.rank, s.alpha, "%g" % s.lr, "%g" % s.max_grad_norm, s.seed, s.total_steps)`).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != want {
		t.Fatalf("runspec.py reads %q, Go %q", got, want)
	}
}

// TestConformance: `bpo conformance train -- python3 train_stage.py` passes, in phase 1 (from the
// SFT adapters) and phase 2 (resuming adapters and optimizer state, member 0's pair diagnostics).
func TestConformance(t *testing.T) {
	command := stageCommand(t)
	for _, k := range []int{1, 2} {
		t.Run(fmt.Sprintf("phase-%d", k), func(t *testing.T) {
			f, err := stage.Prepare(t.TempDir(), v1alpha1.StageTrain, k, stage.FixtureRun(1))
			if err != nil {
				t.Fatal(err)
			}
			var log strings.Builder
			rep, err := stage.Conform(context.Background(), f, command, &log)
			if err != nil {
				t.Fatal(err)
			}
			var out strings.Builder
			rep.Print(&out)
			t.Logf("\n%s", out.String())
			if !rep.Passed() {
				t.Fatalf("the Python train stage fails %v\n%s", rep.Failed(), log.String())
			}
		})
	}
}
