package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestVersionFromLdflags: the -X path the Makefile and Dockerfile.bpo set reaches `bpo --version`.
func TestVersionFromLdflags(t *testing.T) {
	if testing.Short() {
		t.Skip("builds bpo")
	}
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "bpo")
	build := exec.Command("go", "build", "-ldflags", "-X main.version=9.9.9-test", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("bpo --version: %v\n%s", err, out)
	}
	if got, want := strings.TrimSpace(string(out)), "bpo version 9.9.9-test"; got != want {
		t.Errorf("--version: %q, want %q", got, want)
	}
}
