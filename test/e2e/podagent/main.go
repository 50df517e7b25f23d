// Command podagent is a minimal stand-in for a kubelet for the e2e tests: it registers a Node, keeps
// it alive (node Lease + NodeReady heartbeat), and runs the containers of the pods bound to it as
// local processes. Images are ignored: a container's command[0] is looked up in --bin-dir (our own
// binaries), volumes become local folders under --root, and mount paths in args and env values are
// rewritten to those folders. It reports pod phase, container states, exit codes and termination
// messages back like a kubelet does, and deletes pods once their processes are gone.
//
// It also acts as a tiny volume provisioner (--provision): every pending PVC of the storage class
// --storage-class (created as the default class), or with no class at all, gets a hostPath PV on
// <root>/pvc/<namespace>/<claim> pre-bound to it through claimRef, so the scheduler sees bound claims.
// Pods always map a persistentVolumeClaim volume to <root>/pvc/<namespace>/<claimName>, whatever
// PV the claim is bound to.
//
// Not supported: images, probes (containers are Ready once started), restarts (OnFailure/Always are
// run like Never), resource limits, kubectl logs/exec (no kubelet API), service links env.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
)

type options struct {
	kubeconfig   string
	nodeName     string
	root         string
	binDir       string
	cpu          string
	memory       string
	maxPods      int
	maxGrace     time.Duration
	heartbeat    time.Duration
	provision    bool
	storageClass string
	defaultClass bool
}

type agent struct {
	opts     options
	cs       kubernetes.Interface
	log      *slog.Logger
	recorder record.EventRecorder
	hostIP   string

	mu       sync.Mutex
	workers  map[types.UID]*podWorker
	deleting map[types.UID]bool // untracked pods whose forced deletion is under way
	ignored  map[types.UID]bool // pods failed at start-up (AgentRestarted): never run them
	stopping bool
}

func main() {
	var o options
	host, _ := os.Hostname()
	flag.StringVar(&o.kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of the cluster")
	flag.StringVar(&o.nodeName, "node-name", "podagent-"+host, "name of the Node to register")
	flag.StringVar(&o.root, "root", "", "state folder: pvc/, pods/, logs/ (required)")
	flag.StringVar(&o.binDir, "bin-dir", "", "folder in which a container's command[0] is looked up by base name")
	flag.StringVar(&o.cpu, "cpu", fmt.Sprint(runtime.NumCPU()), "node cpu capacity")
	flag.StringVar(&o.memory, "memory", memTotal(), "node memory capacity")
	flag.IntVar(&o.maxPods, "max-pods", 110, "node pods capacity")
	flag.DurationVar(&o.maxGrace, "max-grace", 10*time.Second, "cap on a deleted pod's termination grace period")
	flag.DurationVar(&o.heartbeat, "heartbeat", 10*time.Second, "node lease renewal and NodeReady refresh interval")
	flag.BoolVar(&o.provision, "provision", true, "provision hostPath PVs for pending PVCs (see package doc)")
	flag.StringVar(&o.storageClass, "storage-class", "podagent", "StorageClass served by --provision")
	flag.BoolVar(&o.defaultClass, "default-class", true, "create --storage-class as the cluster's default StorageClass")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if err := run(o, log); err != nil {
		log.Error("podagent failed", "err", err)
		os.Exit(1)
	}
}

func run(o options, log *slog.Logger) error {
	if o.root == "" {
		return fmt.Errorf("--root is required")
	}
	for _, q := range []string{o.cpu, o.memory} {
		if _, err := resource.ParseQuantity(q); err != nil {
			return fmt.Errorf("bad quantity %q: %w", q, err)
		}
	}
	root, err := filepath.Abs(o.root)
	if err != nil {
		return err
	}
	o.root = root
	if o.binDir != "" {
		if o.binDir, err = filepath.Abs(o.binDir); err != nil {
			return err
		}
	}
	for _, d := range []string{"pvc", "pods", "logs"} {
		if err := os.MkdirAll(filepath.Join(o.root, d), 0o755); err != nil {
			return err
		}
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	cfg.UserAgent = "podagent/" + o.nodeName
	cfg.QPS, cfg.Burst = 50, 100
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}

	broadcaster := record.NewBroadcaster()
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")})
	defer broadcaster.Shutdown()

	a := &agent{
		opts:     o,
		cs:       cs,
		log:      log,
		recorder: broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "podagent", Host: o.nodeName}),
		hostIP:   "127.0.0.1",
		workers:  map[types.UID]*podWorker{},
		deleting: map[types.UID]bool{},
		ignored:  map[types.UID]bool{},
	}

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()

	if err := a.registerNode(ctx); err != nil {
		return fmt.Errorf("register node: %w", err)
	}
	log.Info("node registered", "node", o.nodeName, "root", o.root, "binDir", o.binDir)
	a.killLeftovers()
	if err := a.recoverPods(ctx); err != nil {
		return fmt.Errorf("recover pods: %w", err)
	}
	go a.heartbeatLoop(ctx)
	if o.provision {
		if err := a.startProvisioner(ctx); err != nil {
			return fmt.Errorf("provisioner: %w", err)
		}
	}
	if err := a.watchPods(ctx); err != nil {
		return err
	}
	log.Info("ready", "node", o.nodeName)
	<-ctx.Done()
	a.shutdown()
	return nil
}

// shutdown kills every process group still running; the pods stay as they are and are marked
// Failed (AgentRestarted) by the next agent on this node.
func (a *agent) shutdown() {
	a.mu.Lock()
	a.stopping = true
	ws := make([]*podWorker, 0, len(a.workers))
	for _, w := range a.workers {
		ws = append(ws, w)
	}
	a.mu.Unlock()
	n := 0
	for _, w := range ws {
		n += w.killAll(syscall.SIGKILL)
	}
	a.log.Info("shutting down", "killedProcessGroups", n)
}

func memTotal() string {
	b, err := os.ReadFile("/proc/meminfo")
	if err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) >= 2 && f[0] == "MemTotal:" {
				return f[1] + "Ki"
			}
		}
	}
	return "8Gi"
}
