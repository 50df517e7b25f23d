package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestSmallDependencySet: the manager must not link the trainer (gorgonia, gonum, the stage
// pipeline); it only needs the API, the controller and controller-runtime.
func TestSmallDependencySet(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, bad := range []string{"github.com/bpo-dev/bpo/trainer", "github.com/bpo-dev/bpo/pipeline", "gorgonia.org/", "gonum.org/"} {
			if strings.HasPrefix(dep, bad) {
				t.Errorf("cmd/manager depends on %s", dep)
			}
		}
	}
}
