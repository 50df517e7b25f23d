// Command manager runs the AlignmentRun controller. It is kept small: it imports the API, the
// controller and controller-runtime only (never trainer/ or gorgonia).
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	alignv1 "github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/controllers"
)

// LeaderElectionID is the name of the coordination.k8s.io Lease the replicas compete for.
const LeaderElectionID = "alignment.bpo.dev"

func main() {
	var (
		metricsAddr, probeAddr      string
		leaderElect                 bool
		leaderElectionNamespace     string
		stageImage, stagePullPolicy string
		watchNamespaces             string
		maxConcurrentReconciles     int
		apiQPS                      float64
		apiBurst                    int
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8080", "Address the Prometheus metrics endpoint binds to; \"0\" disables it.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address the /healthz and /readyz endpoints bind to.")
	flag.BoolVar(&leaderElect, "leader-elect", false, "Enable leader election (Lease "+LeaderElectionID+"), so that only one replica reconciles.")
	flag.StringVar(&leaderElectionNamespace, "leader-election-namespace", "", "Namespace of the leader-election Lease (default: the pod's namespace).")
	flag.StringVar(&stageImage, "stage-image", controllers.DefaultStageImage, "Image of stage containers when the stage spec sets none.")
	flag.StringVar(&stagePullPolicy, "stage-image-pull-policy", string(corev1.PullIfNotPresent), "imagePullPolicy of stage containers when the stage spec sets none (Always, IfNotPresent, Never).")
	flag.StringVar(&watchNamespaces, "watch-namespaces", "", "Comma-separated namespaces to watch (default: all namespaces).")
	flag.IntVar(&maxConcurrentReconciles, "max-concurrent-reconciles", 1, "Number of AlignmentRuns reconciled in parallel.")
	flag.Float64Var(&apiQPS, "kube-api-qps", 20, "Sustained requests per second to the API server (client-side rate limit; make bench-operator shows where it binds).")
	flag.IntVar(&apiBurst, "kube-api-burst", 30, "Requests the client may send in a burst above --kube-api-qps.")
	var allowedImages string
	var policy controllers.StagePolicy
	flag.StringVar(&allowedImages, "allowed-stage-images", "", "Comma-separated image prefixes a run's stages may use besides --stage-image's repository (\"*\": any image). Default: none.")
	flag.BoolVar(&policy.AllowCommand, "allow-stage-command", false, "Allow runs to override a stage's command and args.")
	flag.BoolVar(&policy.AllowSecretEnv, "allow-stage-secret-env", false, "Allow env entries of a run's stages that read a Secret (the annotator's secretRef is always allowed).")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	for _, p := range strings.Split(allowedImages, ",") {
		if p = strings.TrimSpace(p); p != "" {
			policy.AllowedImages = append(policy.AllowedImages, p)
		}
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	log := ctrl.Log.WithName("setup")

	switch corev1.PullPolicy(stagePullPolicy) {
	case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		fmt.Fprintf(os.Stderr, "--stage-image-pull-policy must be Always, IfNotPresent or Never, got %q\n", stagePullPolicy)
		os.Exit(2)
	}

	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, alignv1.AddToScheme} {
		if err := add(scheme); err != nil {
			log.Error(err, "building the scheme")
			os.Exit(1)
		}
	}

	var namespaces []string
	for _, ns := range strings.Split(watchNamespaces, ",") {
		if ns = strings.TrimSpace(ns); ns != "" {
			namespaces = append(namespaces, ns)
		}
	}

	if apiQPS <= 0 || apiBurst <= 0 {
		fmt.Fprintf(os.Stderr, "--kube-api-qps and --kube-api-burst must be > 0, got %v and %d\n", apiQPS, apiBurst)
		os.Exit(2)
	}
	restConfig := ctrl.GetConfigOrDie()
	restConfig.QPS, restConfig.Burst = float32(apiQPS), apiBurst
	mgr, err := ctrl.NewManager(restConfig, ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress:  probeAddr,
		LeaderElection:          leaderElect,
		LeaderElectionID:        LeaderElectionID,
		LeaderElectionNamespace: leaderElectionNamespace,
		// Stop reconciling at once when leadership is lost; the process then exits.
		LeaderElectionReleaseOnCancel: true,
		Cache:                         controllers.CacheOptions(namespaces),
	})
	if err != nil {
		log.Error(err, "creating the manager")
		os.Exit(1)
	}

	if err := (&controllers.AlignmentRunReconciler{
		Client:                  mgr.GetClient(),
		Scheme:                  mgr.GetScheme(),
		StageImage:              stageImage,
		StageImagePullPolicy:    corev1.PullPolicy(stagePullPolicy),
		Policy:                  policy,
		MaxConcurrentReconciles: maxConcurrentReconciles,
	}).SetupWithManager(mgr); err != nil {
		log.Error(err, "setting up the AlignmentRun controller")
		os.Exit(1)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		log.Error(err, "adding the health check")
		os.Exit(1)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		log.Error(err, "adding the readiness check")
		os.Exit(1)
	}

	log.Info("starting the manager", "stageImage", stageImage, "watchNamespaces", namespaces, "leaderElection", leaderElect)
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		log.Error(err, "running the manager")
		os.Exit(1)
	}
}
