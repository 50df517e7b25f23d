// Command manager runs the AlignmentRun controller. It is kept small: it imports the API, the
// controller and controller-runtime only (never trainer/ or gorgonia).
package main

import (
	"flag"
	"fmt"
	"os"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/bpo-dev/bpo/controllers"
)

func main() {
	var o options
	o.bind(flag.CommandLine)
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	if o.version {
		fmt.Printf("manager %s (default stage image %s)\n", controllers.Version, controllers.DefaultStageImage)
		return
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	log := ctrl.Log.WithName("setup")

	if err := o.validate(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	restConfig := ctrl.GetConfigOrDie()
	restConfig.QPS, restConfig.Burst = float32(o.apiQPS), o.apiBurst
	mgr, err := newManager(restConfig, &o)
	if err != nil {
		log.Error(err, "setting up the manager")
		os.Exit(1)
	}
	log.Info("starting the manager", "version", controllers.Version, "stageImage", o.stageImage, "watchNamespaces", o.namespaces(),
		"leaderElection", o.leaderElect, "metrics", o.metrics.bindAddress, "metricsSecure", o.metrics.secure)
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		log.Error(err, "running the manager")
		os.Exit(1)
	}
}
