package testutil

import (
	"os"
	"strings"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// TestStartEnvtestRetries: a start that fails is retried with a fresh Environment; when all
// fail, every attempt's error is reported.
func TestStartEnvtestRetries(t *testing.T) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Skip("KUBEBUILDER_ASSETS is unset")
	}
	calls := 0
	broken := func() *envtest.Environment {
		calls++
		// fails after the control plane started: the attempt must stop it
		return &envtest.Environment{CRDDirectoryPaths: []string{"/nonexistent"}, ErrorIfCRDPathMissing: true}
	}
	if _, _, err := StartEnvtest(broken, 1); err == nil || calls != 1 || !strings.Contains(err.Error(), "attempt 1") {
		t.Fatalf("all attempts failing: calls %d, err %v", calls, err)
	}

	calls = 0
	env, cfg, err := StartEnvtest(func() *envtest.Environment {
		calls++
		if calls == 1 {
			return &envtest.Environment{CRDDirectoryPaths: []string{"/nonexistent"}, ErrorIfCRDPathMissing: true}
		}
		return &envtest.Environment{}
	}, 3)
	if err != nil || calls != 2 || cfg == nil {
		t.Fatalf("second attempt should start: calls %d, err %v", calls, err)
	}
	if err := env.Stop(); err != nil {
		t.Fatal(err)
	}
}
