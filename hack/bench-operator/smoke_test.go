package main

import (
	"os"
	"testing"
	"time"
)

// TestSmoke runs the benchmark end to end on three runs with instant stages: the real manager
// binary against a real kube-apiserver, so that `make bench-operator` cannot break unnoticed (it
// once did, when the manager's metrics went HTTPS by default). The figures are not checked here:
// they are what the benchmark is for.
func TestSmoke(t *testing.T) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Skip("KUBEBUILDER_ASSETS is unset: envtest binaries needed")
	}
	if testing.Short() {
		t.Skip("-short")
	}
	t.Chdir("../..") // run() builds ./cmd/manager and reads config/crd/bases from the repository root
	o := options{runs: 3, phases: 1, members: 1, reconciles: 2, qps: 50, burst: 100, drivers: 2, creators: 2,
		timeout: 3 * time.Minute, managerLogs: t.TempDir() + "/manager.log"}
	if err := run(o); err != nil {
		t.Fatal(err)
	}
}
