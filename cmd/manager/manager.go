package main

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"

	alignv1 "github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/controllers"
)

// newManager builds the manager from validated options: the AlignmentRun controller, the
// metrics server (metricsFlags.serverOptions) and the health checks. Tests build it the same way.
func newManager(restConfig *rest.Config, o *options) (ctrl.Manager, error) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, alignv1.AddToScheme} {
		if err := add(scheme); err != nil {
			return nil, fmt.Errorf("building the scheme: %w", err)
		}
	}
	metricsOpts, certWatcher, err := o.metrics.serverOptions()
	if err != nil {
		return nil, err
	}
	resources, err := o.stageResources.requirements()
	if err != nil {
		return nil, err
	}
	mgr, err := ctrl.NewManager(restConfig, ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsOpts,
		HealthProbeBindAddress:  o.probeAddr,
		LeaderElection:          o.leaderElect,
		LeaderElectionID:        LeaderElectionID,
		LeaderElectionNamespace: o.leaderElectionNamespace,
		// Stop reconciling at once when leadership is lost; the process then exits.
		LeaderElectionReleaseOnCancel: true,
		Cache:                         controllers.CacheOptions(o.namespaces()),
	})
	if err != nil {
		return nil, fmt.Errorf("creating the manager: %w", err)
	}
	if certWatcher != nil {
		if err := mgr.Add(certWatcher); err != nil {
			return nil, fmt.Errorf("adding the metrics certificate watcher: %w", err)
		}
	}
	progress, err := addProgressServer(mgr, o)
	if err != nil {
		return nil, err
	}
	if err := (&controllers.AlignmentRunReconciler{
		Client:                  mgr.GetClient(),
		Scheme:                  mgr.GetScheme(),
		StageImage:              o.stageImage,
		StageImagePullPolicy:    corev1.PullPolicy(o.stagePullPolicy),
		StageResources:          resources,
		Policy:                  o.stagePolicy(),
		MaxConcurrentReconciles: o.maxConcurrentReconciles,
		Progress:                progress,
		ProgressURL:             o.progressURL,
	}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the AlignmentRun controller: %w", err)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return nil, fmt.Errorf("adding the health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return nil, fmt.Errorf("adding the readiness check: %w", err)
	}
	return mgr, nil
}
