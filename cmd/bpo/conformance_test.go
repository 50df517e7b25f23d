package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bpo-dev/bpo/stage"
)

// asBPO makes this test binary act as the bpo command when the variable is set, so the
// conformance tests run our real stage commands as a child process without a separate build.
const asBPO = "BPO_TEST_AS_BPO"

func TestMain(m *testing.M) {
	if os.Getenv(asBPO) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// conform prepares a fixture for stage and runs command on it.
func conform(t *testing.T, stageName string, command ...string) *stage.Report {
	t.Helper()
	t.Setenv(asBPO, "1")
	f, err := stage.Prepare(t.TempDir(), stageName, 1, stage.FixtureRun(2))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := stage.Conform(context.Background(), f, command, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	rep.Print(&out)
	t.Log("\n" + out.String())
	return rep
}

func TestConformanceOwnStages(t *testing.T) {
	for _, s := range []string{"sample", "label"} {
		t.Run(s, func(t *testing.T) {
			rep := conform(t, s, os.Args[0], s)
			if !rep.Passed() {
				t.Fatalf("our own %s stage fails the contract: %v", s, rep.Failed())
			}
			// 2 pods (exit code and message each), shard plan, markers, schema, rows, log-probs, markers last.
			if len(rep.Checks) != 10 {
				t.Fatalf("want 10 checks, got %d", len(rep.Checks))
			}
		})
	}
}

func TestConformanceRejects(t *testing.T) {
	truncate := filepath.Join(t.TempDir(), "truncate.sh")
	// Runs our sample stage, then cuts its shard to the first row: valid rows, a prompt missing.
	script := `#!/bin/sh
"$BPO_SELF" sample "$@" || exit 1
while [ $# -gt 0 ]; do [ "$1" = --workspace ] && ws=$2; shift; done
f="$ws/conformance/phase-1/samples/shard-$JOB_COMPLETION_INDEX.jsonl"
head -n 1 "$f" > "$f.tmp" && mv "$f.tmp" "$f"
`
	if err := os.WriteFile(truncate, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("BPO_SELF", os.Args[0])
	for _, c := range []struct {
		name    string
		command []string
		want    []string // checks that must fail
		pass    []string // checks that must still pass
	}{
		{"writes nothing", []string{"sh", "-c", "exit 0"}, []string{"termination-message[0]", "shard-plan", "done-markers", "outputs-schema"}, []string{"exit-code[0]"}},
		{"fails", []string{"sh", "-c", "exit 3"}, []string{"exit-code[0]", "exit-code[1]"}, nil},
		{"truncated samples", []string{truncate}, []string{"rows", "markers-written-last"}, []string{"outputs-schema", "termination-message[1]"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			rep := conform(t, "sample", c.command...)
			failed := rep.Failed()
			for _, w := range c.want {
				if !slices.Contains(failed, w) {
					t.Errorf("check %s should fail; failed: %v", w, failed)
				}
			}
			for _, p := range c.pass {
				if slices.Contains(failed, p) {
					t.Errorf("check %s should pass; failed: %v", p, failed)
				}
			}
		})
	}
}
