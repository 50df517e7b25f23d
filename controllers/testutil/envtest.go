package testutil

import (
	"errors"
	"fmt"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// StartEnvtest starts an envtest control plane, trying again with a fresh Environment (and
// so fresh ports) when a start fails: envtest picks free ports by listening on :0, which are
// ephemeral ports that another process's outgoing connection can take before etcd or the
// API server binds them (our e2e control plane lost exactly that race once).
func StartEnvtest(newEnv func() *envtest.Environment, attempts int) (*envtest.Environment, *rest.Config, error) {
	var errs []error
	for i := 0; i < max(attempts, 1); i++ {
		env := newEnv()
		cfg, err := env.Start()
		if err == nil {
			return env, cfg, nil
		}
		errs = append(errs, fmt.Errorf("attempt %d: %w", i+1, err))
		_ = env.Stop()
	}
	return nil, nil, errors.Join(errs...)
}
