package main

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestConformanceTrain: our own train stage passes every train check, and a train stage that
// reports invented numbers or leaves a wrong optimizer state or rng record is caught.
func TestConformanceTrain(t *testing.T) {
	rep := conform(t, "train", os.Args[0], "train")
	if !rep.Passed() {
		t.Fatalf("our own train stage fails the contract: %v", rep.Failed())
	}
	// 2 pods (exit code and message each), markers, outputs, member-state, train-result, train-metrics, markers last.
	if len(rep.Checks) != 10 {
		t.Fatalf("want 10 checks, got %d", len(rep.Checks))
	}

	t.Setenv("BPO_SELF", os.Args[0])
	dir := t.TempDir()
	// Each script runs our train stage, then spoils one thing of member $JOB_COMPLETION_INDEX.
	head := `#!/bin/sh
"$BPO_SELF" train "$@" || exit 1
while [ $# -gt 0 ]; do case $1 in --workspace) ws=$2;; --phase) k=$2;; esac; shift; done
d="$ws/conformance/phase-$k"; m="$d/members/member-$JOB_COMPLETION_INDEX"
`
	for _, c := range []struct {
		name, spoil string
		want        []string // checks that must fail
		pass        []string // checks that must still pass
	}{
		{"invented loss", `sed -i 's/"loss": [-0-9.e]*/"loss": 0.01/' "$d/train-$JOB_COMPLETION_INDEX.done.json"`,
			[]string{"train-metrics"}, []string{"outputs", "member-state", "train-result"}},
		{"wrong rng record", `echo '{"seed":99,"phase":1}' > "$m/rng.json"; touch "$d/train-$JOB_COMPLETION_INDEX.done.json"`,
			[]string{"member-state"}, []string{"outputs", "train-metrics"}},
		{"no steps counted", `sed -i '/"steps"/d' "$d/train-$JOB_COMPLETION_INDEX.done.json"`,
			[]string{"train-result", "member-state"}, []string{"outputs", "train-metrics"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			script := filepath.Join(dir, c.name+".sh")
			if err := os.WriteFile(script, []byte(head+c.spoil+"\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			rep := conform(t, "train", script)
			failed := rep.Failed()
			for _, w := range c.want {
				if !slices.Contains(failed, w) {
					t.Errorf("check %s passed, want it to fail (failed: %v)", w, failed)
				}
			}
			for _, p := range c.pass {
				if slices.Contains(failed, p) {
					t.Errorf("check %s failed, want it to pass", p)
				}
			}
		})
	}
}
