package controllers

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	alignv1 "github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/controllers/testutil"
)

// The integration tests run the controller against a real kube-apiserver and etcd (envtest,
// KUBEBUILDER_ASSETS; `hack/k8s-binaries.sh --only envtest` builds them). Each test gets its
// own namespace and its own manager whose cache is restricted to that namespace, so tests run
// in parallel. Without KUBEBUILDER_ASSETS the envtest tests skip, except under CI (CI set),
// where they fail.

var (
	cfg       *rest.Config
	k8sClient client.Client
	testEnv   *envtest.Environment
	scheme    = runtime.NewScheme()
	envReason string // why envtest is unavailable ("" when it runs)
)

func TestMain(m *testing.M) {
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, alignv1.AddToScheme} {
		if err := add(scheme); err != nil {
			panic(err)
		}
	}
	if os.Getenv("TEST_VERBOSE_LOGS") != "" {
		logf.SetLogger(zap.New(zap.UseDevMode(true), zap.WriteTo(os.Stderr)))
	} else {
		logf.SetLogger(zap.New(zap.WriteTo(discard{})))
	}

	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		if os.Getenv("CI") != "" {
			fmt.Fprintln(os.Stderr, "controllers: KUBEBUILDER_ASSETS is unset under CI; run `export KUBEBUILDER_ASSETS=$(hack/k8s-binaries.sh --only envtest | tail -1)`")
			os.Exit(1)
		}
		envReason = "KUBEBUILDER_ASSETS is unset: envtest tests skipped (export KUBEBUILDER_ASSETS=$(hack/k8s-binaries.sh --only envtest | tail -1) to run them)"
		fmt.Fprintln(os.Stderr, "controllers: "+envReason)
		os.Exit(m.Run())
	}

	var err error
	testEnv, cfg, err = testutil.StartEnvtest(func() *envtest.Environment {
		return &envtest.Environment{
			CRDDirectoryPaths:     []string{filepath.Join("..", "config", "crd", "bases")},
			ErrorIfCRDPathMissing: true,
		}
	}, 3)
	if err != nil {
		fmt.Fprintf(os.Stderr, "controllers: starting envtest: %v\n", err)
		os.Exit(1)
	}
	cfg.QPS, cfg.Burst = 500, 1000
	if k8sClient, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		fmt.Fprintf(os.Stderr, "controllers: client: %v\n", err)
		_ = testEnv.Stop()
		os.Exit(1)
	}
	code := m.Run()
	if err := testEnv.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "controllers: stopping envtest: %v\n", err)
	}
	os.Exit(code)
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// requireEnv skips (outside CI) when envtest is unavailable.
func requireEnv(t *testing.T) {
	t.Helper()
	if envReason != "" {
		t.Skip(envReason)
	}
}

// newNamespace creates a namespace (with the default ServiceAccount pods need) for one test.
func newNamespace(t *testing.T, prefix string) string {
	t.Helper()
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"}}
	must(t, k8sClient.Create(ctx, ns))
	must(t, k8sClient.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: ns.Name}}))
	return ns.Name
}

// testManager is a running controller manager for one namespace.
type testManager struct {
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// startManager starts a manager running the AlignmentRun controller, watching only ns.
func startManager(t *testing.T, ns string, tweak ...func(*AlignmentRunReconciler)) *testManager {
	t.Helper()
	return startManagerWith(t, cfg, ctrl.Options{}, ns, tweak...)
}

// startManagerWith starts a manager with the given identity and options (scheme, metrics,
// probes and the namespace-restricted cache are filled in).
func startManagerWith(t *testing.T, restCfg *rest.Config, opts ctrl.Options, ns string, tweak ...func(*AlignmentRunReconciler)) *testManager {
	t.Helper()
	opts.Scheme = scheme
	opts.Metrics = metricsserver.Options{BindAddress: "0"}
	opts.HealthProbeBindAddress = "0"
	opts.Cache = CacheOptions([]string{ns})
	mgr, err := ctrl.NewManager(restCfg, opts)
	must(t, err)
	r := &AlignmentRunReconciler{
		Client:             mgr.GetClient(),
		Scheme:             mgr.GetScheme(),
		StageImage:         "example.com/bpo:test",
		ResultsGracePeriod: 3 * time.Second,
	}
	for _, f := range tweak {
		f(r)
	}
	must(t, r.SetupWithManager(mgr))
	ctx, cancel := context.WithCancel(context.Background())
	tm := &testManager{cancel: cancel, done: make(chan error, 1)}
	go func() { tm.done <- mgr.Start(ctx) }()
	t.Cleanup(tm.stop)
	return tm
}

func (m *testManager) stop() {
	m.once.Do(func() {
		m.cancel()
		<-m.done
	})
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// eventually polls cond every 50 ms until it returns "" (success) or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		if last = cond(); last == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %s", timeout, what, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// consistently checks cond for the whole duration.
func consistently(t *testing.T, d time.Duration, what string, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if msg := cond(); msg != "" {
			t.Fatalf("%s: %s", what, msg)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

const waitTimeout = 20 * time.Second

func getRun(t *testing.T, ns, name string) *alignv1.AlignmentRun {
	t.Helper()
	run := &alignv1.AlignmentRun{}
	must(t, k8sClient.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, run))
	return run
}

func createRun(t *testing.T, run *alignv1.AlignmentRun) *alignv1.AlignmentRun {
	t.Helper()
	must(t, k8sClient.Create(context.Background(), run))
	return run
}

// listJobs returns the run's Jobs sorted by name.
func listJobs(t *testing.T, ns, run string) []batchv1.Job {
	t.Helper()
	var jobs batchv1.JobList
	must(t, k8sClient.List(context.Background(), &jobs, client.InNamespace(ns), client.MatchingLabels{alignv1.LabelRun: run}))
	slices.SortFunc(jobs.Items, func(a, b batchv1.Job) int { return strings.Compare(a.Name, b.Name) })
	return jobs.Items
}

func jobNames(jobs []batchv1.Job) []string {
	var names []string
	for _, j := range jobs {
		names = append(names, j.Name)
	}
	return names
}

// waitJob waits for the named Job to exist and returns it.
func waitJob(t *testing.T, ns, name string) *batchv1.Job {
	t.Helper()
	job := &batchv1.Job{}
	eventually(t, waitTimeout, "Job "+name, func() string {
		if err := k8sClient.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, job); err != nil {
			return fmt.Sprintf("%v (jobs: %v)", err, jobNames(listJobs(t, ns, strings.SplitN(name, "-p", 2)[0])))
		}
		return ""
	})
	return job
}

// waitCondition waits for the run's condition to have the status (and reason, if not empty).
func waitCondition(t *testing.T, ns, name, condType string, status metav1.ConditionStatus, reason string) *alignv1.AlignmentRun {
	t.Helper()
	var run *alignv1.AlignmentRun
	eventually(t, waitTimeout, fmt.Sprintf("%s=%s (%s)", condType, status, reason), func() string {
		run = getRun(t, ns, name)
		for _, c := range run.Status.Conditions {
			if c.Type == condType && c.Status == status && (reason == "" || c.Reason == reason) {
				return ""
			}
		}
		return fmt.Sprintf("conditions %+v", run.Status.Conditions)
	})
	return run
}

// succeed completes the named stage Job with deterministic StageResults.
func succeed(t *testing.T, ns, jobName string) *batchv1.Job {
	t.Helper()
	job := waitJob(t, ns, jobName)
	must(t, testutil.SucceedJob(context.Background(), k8sClient, job, func(i int32) alignv1.StageResult {
		return fakeResult(job.Labels[alignv1.LabelStage], job.Labels[alignv1.LabelPhase], i)
	}))
	return job
}

// eventReasons lists the reasons of the events.k8s.io Events about the run.
func eventReasons(t *testing.T, ns, name string) []string {
	t.Helper()
	var list eventsv1.EventList
	must(t, k8sClient.List(context.Background(), &list, client.InNamespace(ns)))
	slices.SortFunc(list.Items, func(a, b eventsv1.Event) int { return a.EventTime.Compare(b.EventTime.Time) })
	var reasons []string
	for _, e := range list.Items {
		if e.Regarding.Kind == "AlignmentRun" && e.Regarding.Name == name {
			reasons = append(reasons, e.Reason)
		}
	}
	return reasons
}

// waitEvents waits until the run has events with all the given reasons.
func waitEvents(t *testing.T, ns, name string, reasons ...string) {
	t.Helper()
	eventually(t, waitTimeout, fmt.Sprintf("events %v", reasons), func() string {
		got := eventReasons(t, ns, name)
		for _, r := range reasons {
			if !slices.Contains(got, r) {
				return fmt.Sprintf("missing %s in %v", r, got)
			}
		}
		return ""
	})
}

// eventNotes lists the notes of the run's events with the given reason.
func eventNotes(t *testing.T, ns, name, reason string) []string {
	t.Helper()
	var list eventsv1.EventList
	must(t, k8sClient.List(context.Background(), &list, client.InNamespace(ns)))
	var notes []string
	for _, e := range list.Items {
		if e.Regarding.Kind == "AlignmentRun" && e.Regarding.Name == name && e.Reason == reason {
			notes = append(notes, e.Note)
		}
	}
	return notes
}
