package main

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/bpo-dev/bpo/controllers"
)

// LeaderElectionID is the name of the coordination.k8s.io Lease the replicas compete for.
const LeaderElectionID = "alignment.bpo.dev"

// options are the manager's flags.
type options struct {
	metrics                     metricsFlags
	probeAddr                   string
	leaderElect                 bool
	leaderElectionNamespace     string
	stageImage, stagePullPolicy string
	watchNamespaces             string
	maxConcurrentReconciles     int
	apiQPS                      float64
	apiBurst                    int
	allowedImages               string
	policy                      controllers.StagePolicy
	stageResources              stageResourceFlags
	version                     bool
	progressAddr, progressURL   string
}

// stageResourceFlags are the operator-wide defaults of stage containers' resources, as
// quantities ("" leaves that resource unset).
type stageResourceFlags struct {
	cpuRequest, memoryRequest, cpuLimit, memoryLimit string
}

func (o *options) bind(fs *flag.FlagSet) {
	o.metrics.bind(fs)
	fs.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "Address the /healthz and /readyz endpoints bind to.")
	fs.BoolVar(&o.leaderElect, "leader-elect", false, "Enable leader election (Lease "+LeaderElectionID+"), so that only one replica reconciles.")
	fs.StringVar(&o.leaderElectionNamespace, "leader-election-namespace", "", "Namespace of the leader-election Lease (default: the pod's namespace).")
	fs.StringVar(&o.stageImage, "stage-image", controllers.DefaultStageImage, "Image of stage containers when the stage spec sets none (default: the stage image of this manager's version).")
	fs.StringVar(&o.stagePullPolicy, "stage-image-pull-policy", string(corev1.PullIfNotPresent), "imagePullPolicy of stage containers when the stage spec sets none (Always, IfNotPresent, Never).")
	fs.StringVar(&o.watchNamespaces, "watch-namespaces", "", "Comma-separated namespaces to watch (default: all namespaces).")
	fs.IntVar(&o.maxConcurrentReconciles, "max-concurrent-reconciles", 1, "Number of AlignmentRuns reconciled in parallel.")
	fs.Float64Var(&o.apiQPS, "kube-api-qps", 20, "Sustained requests per second to the API server (client-side rate limit; make bench-operator shows where it binds).")
	fs.IntVar(&o.apiBurst, "kube-api-burst", 30, "Requests the client may send in a burst above --kube-api-qps.")
	fs.StringVar(&o.allowedImages, "allowed-stage-images", "", "Comma-separated image prefixes a run's stages may use besides --stage-image's repository (\"*\": any image). Default: none.")
	fs.BoolVar(&o.policy.AllowCommand, "allow-stage-command", false, "Allow runs to override a stage's command and args.")
	fs.BoolVar(&o.policy.AllowSecretEnv, "allow-stage-secret-env", false, "Allow env entries of a run's stages that read a Secret (the annotator's secretRef is always allowed).")
	d := controllers.DefaultStageResources()
	q := func(l corev1.ResourceList, n corev1.ResourceName) string {
		if v, ok := l[n]; ok {
			return v.String()
		}
		return ""
	}
	const per = " of stage containers whose spec.<stage>.resources sets no request or limit for it (\"\": none)."
	fs.StringVar(&o.stageResources.cpuRequest, "stage-cpu-request", q(d.Requests, corev1.ResourceCPU), "Default CPU request"+per)
	fs.StringVar(&o.stageResources.memoryRequest, "stage-memory-request", q(d.Requests, corev1.ResourceMemory), "Default memory request"+per)
	fs.StringVar(&o.stageResources.cpuLimit, "stage-cpu-limit", q(d.Limits, corev1.ResourceCPU), "Default CPU limit of stage containers whose spec.<stage>.resources sets no CPU limit (\"\": none; the engine sizes its threads from it).")
	fs.StringVar(&o.stageResources.memoryLimit, "stage-memory-limit", q(d.Limits, corev1.ResourceMemory), "Default memory limit of stage containers whose spec.<stage>.resources sets no memory limit (\"\": none; raised to the stage's own request when that is larger).")
	fs.StringVar(&o.progressAddr, "progress-bind-address", ":8082", "Address of the endpoint stage pods post their live progress to (\"0\": none; status.stageProgress then stays empty).")
	fs.StringVar(&o.progressURL, "progress-url", "", "URL stage pods reach the progress endpoint at, e.g. http://bpo-progress.bpo-system.svc:8082 (empty: pods are told no endpoint and report nothing).")
	fs.BoolVar(&o.version, "version", false, "Print the version and the default stage image, and exit.")
}

// namespaces is --watch-namespaces as a list.
func (o *options) namespaces() []string { return splitList(o.watchNamespaces) }

// stagePolicy is --allow-stage-* and --allowed-stage-images.
func (o *options) stagePolicy() controllers.StagePolicy {
	p := o.policy
	p.AllowedImages = splitList(o.allowedImages)
	return p
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// validate checks the flags that the manager cannot start with, naming each.
func (o *options) validate() error {
	var errs []error
	switch corev1.PullPolicy(o.stagePullPolicy) {
	case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		errs = append(errs, fmt.Errorf("--stage-image-pull-policy must be Always, IfNotPresent or Never, got %q", o.stagePullPolicy))
	}
	if o.apiQPS <= 0 || o.apiBurst <= 0 {
		errs = append(errs, fmt.Errorf("--kube-api-qps and --kube-api-burst must be > 0, got %v and %d", o.apiQPS, o.apiBurst))
	}
	if _, err := o.stageResources.requirements(); err != nil {
		errs = append(errs, err)
	}
	if o.progressURL != "" {
		if u, err := url.Parse(o.progressURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("--progress-url %q: want an http(s) URL with a host, e.g. http://bpo-progress.bpo-system.svc:8082", o.progressURL))
		}
		if o.progressAddr == "0" {
			errs = append(errs, errors.New("--progress-url is set but --progress-bind-address=0 serves no endpoint: set both or neither"))
		}
	}
	return errors.Join(errs...)
}

// requirements parses the flags into the defaults the reconciler merges into each stage.
func (f stageResourceFlags) requirements() (corev1.ResourceRequirements, error) {
	var out corev1.ResourceRequirements
	var errs []error
	set := func(list *corev1.ResourceList, name corev1.ResourceName, flagName, v string) {
		if v = strings.TrimSpace(v); v == "" {
			return
		}
		q, err := resource.ParseQuantity(v)
		if err != nil || q.Sign() <= 0 {
			errs = append(errs, fmt.Errorf("--%s=%q: want a positive quantity such as 500m, 1 or 2Gi (or \"\" for none)", flagName, v))
			return
		}
		if *list == nil {
			*list = corev1.ResourceList{}
		}
		(*list)[name] = q
	}
	set(&out.Requests, corev1.ResourceCPU, "stage-cpu-request", f.cpuRequest)
	set(&out.Requests, corev1.ResourceMemory, "stage-memory-request", f.memoryRequest)
	set(&out.Limits, corev1.ResourceCPU, "stage-cpu-limit", f.cpuLimit)
	set(&out.Limits, corev1.ResourceMemory, "stage-memory-limit", f.memoryLimit)
	for name, lim := range out.Limits {
		if req, ok := out.Requests[name]; ok && req.Cmp(lim) > 0 {
			errs = append(errs, fmt.Errorf("--stage-%s-request (%s) is above --stage-%s-limit (%s)", name, req.String(), name, lim.String()))
		}
	}
	return out, errors.Join(errs...)
}
