// Command bench-operator measures the operator under load (make bench-operator): many
// concurrent AlignmentRuns reconciled by one manager process (the real cmd/manager binary)
// against a real kube-apiserver and etcd (envtest's, built by hack/k8s-binaries.sh), with the
// stage pods played by a driver in this process: for every stage Job the manager creates, the
// driver creates the Job's pods with a successful StageResult as termination message and marks
// the Job Complete, as the Job controller and kubelets would.
//
// It prints the manager's peak resident memory, the time from a Job's completion to the
// creation of the run's next Job (p50, p99, max), the manager's API requests per stage
// transition and the wall time. It is a benchmark, not a test: it asserts nothing beyond every
// run reaching Succeeded.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	alignv1 "github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/controllers/testutil"
)

type options struct {
	runs, phases, members   int
	reconciles              int
	qps                     float64
	burst                   int
	drivers, creators       int
	stage                   time.Duration
	timeout                 time.Duration
	managerBin, managerLogs string
}

func main() {
	var o options
	flag.IntVar(&o.runs, "runs", 1000, "concurrent AlignmentRuns")
	flag.IntVar(&o.phases, "phases", 1, "phases per run (4 stage Jobs per phase with evaluation every phase)")
	flag.IntVar(&o.members, "members", 1, "ensemble members per run (train completions)")
	flag.IntVar(&o.reconciles, "max-concurrent-reconciles", 4, "the manager's --max-concurrent-reconciles")
	flag.Float64Var(&o.qps, "kube-api-qps", 100, "the manager's --kube-api-qps")
	flag.IntVar(&o.burst, "kube-api-burst", 200, "the manager's --kube-api-burst")
	flag.IntVar(&o.drivers, "drivers", 16, "driver workers completing stage Jobs")
	flag.IntVar(&o.creators, "creators", 16, "workers creating the runs")
	flag.DurationVar(&o.stage, "stage-duration", 0, "how long each stage Job runs before the driver completes it, ±50% uniformly (0: at once, the controller's throughput)")
	flag.DurationVar(&o.timeout, "timeout", 30*time.Minute, "give up after this long")
	flag.StringVar(&o.managerBin, "manager", "", "manager binary (default: go build ./cmd/manager)")
	flag.StringVar(&o.managerLogs, "manager-log", "", "file for the manager's log (default: a temp file)")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench-operator:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		return errors.New("KUBEBUILDER_ASSETS is unset: export KUBEBUILDER_ASSETS=$(hack/k8s-binaries.sh --only envtest | tail -1)")
	}
	tmp, err := os.MkdirTemp("", "bench-operator-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	fmt.Fprintln(os.Stderr, "starting kube-apiserver and etcd")
	env, cfg, err := testutil.StartEnvtest(func() *envtest.Environment {
		return &envtest.Environment{CRDDirectoryPaths: []string{filepath.Join("config", "crd", "bases")}, ErrorIfCRDPathMissing: true}
	}, 3)
	if err != nil {
		return err
	}
	defer func() { _ = env.Stop() }()
	user, err := env.AddUser(envtest.User{Name: "bench-manager", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return err
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		return err
	}
	kubeconfigPath := filepath.Join(tmp, "kubeconfig")
	if err := os.WriteFile(kubeconfigPath, kubeconfig, 0o600); err != nil {
		return err
	}

	bin := o.managerBin
	if bin == "" {
		bin = filepath.Join(tmp, "manager")
		fmt.Fprintln(os.Stderr, "building ./cmd/manager")
		if out, err := exec.Command("go", "build", "-o", bin, "./cmd/manager").CombinedOutput(); err != nil {
			return fmt.Errorf("go build ./cmd/manager: %v\n%s", err, out)
		}
	}
	mgr, err := startManager(o, bin, kubeconfigPath, tmp)
	if err != nil {
		return err
	}
	defer mgr.stop()

	scheme := k8sruntime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = alignv1.AddToScheme(scheme)
	cfg.QPS, cfg.Burst = 2000, 4000 // the driver must not be what limits the figures
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	const ns = "bench"
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		return err
	}

	d := newDriver(c, o.drivers, o.stage)
	factory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(ns))
	jobs := factory.Batch().V1().Jobs().Informer()
	if _, err := jobs.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { d.observe(obj.(*batchv1.Job)) },
	}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), jobs.HasSynced) {
		return errors.New("the Job informer did not sync")
	}
	go d.work(ctx)

	before, err := mgr.requests()
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "creating %d AlignmentRuns (%d phases, %d members)\n", o.runs, o.phases, o.members)
	start := time.Now()
	if err := createRuns(ctx, c, ns, o); err != nil {
		return err
	}
	created := time.Since(start)
	if err := waitSucceeded(ctx, c, ns, o.runs, start); err != nil {
		return fmt.Errorf("%w (manager log: %s)", err, mgr.logPath)
	}
	wall := time.Since(start)
	after, err := mgr.requests()
	if err != nil {
		return err
	}
	cpu := processCPU(mgr.cmd.Process.Pid)
	report(o, d, mgr, wall, created, after-before, cpu)
	return nil
}

// processCPU is the CPU time (user + system) so far of the manager, of this process (the
// driver) and of its kube-apiserver and etcd children, read from /proc: where the machine's
// cores went during the run.
func processCPU(manager int) map[string]time.Duration {
	out := map[string]time.Duration{}
	add := func(name string, pid int) {
		if t, err := cpuTime(pid); err == nil {
			out[name] += t
		}
	}
	add("manager", manager)
	self := os.Getpid()
	add("driver (this process)", self)
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil {
			continue
		}
		name := strings.TrimSpace(string(comm))
		if (name == "kube-apiserver" || name == "etcd") && parentPid(pid) == self {
			add(name, pid)
		}
	}
	return out
}

// cpuTime is utime + stime of a process (/proc/<pid>/stat fields 14 and 15, in clock ticks of
// 1/100 s, the Linux default).
func cpuTime(pid int) (time.Duration, error) {
	f, err := statFields(pid)
	if err != nil || len(f) < 15 {
		return 0, fmt.Errorf("/proc/%d/stat: %v", pid, err)
	}
	u, _ := strconv.ParseInt(f[13], 10, 64)
	s, _ := strconv.ParseInt(f[14], 10, 64)
	return time.Duration(u+s) * 10 * time.Millisecond, nil
}

func parentPid(pid int) int {
	f, err := statFields(pid)
	if err != nil || len(f) < 4 {
		return -1
	}
	p, _ := strconv.Atoi(f[3])
	return p
}

// statFields splits /proc/<pid>/stat, whose second field (the command in parentheses) may hold
// spaces.
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, errors.New("no command field")
	}
	head := strings.Fields(s[:strings.IndexByte(s, '(')])
	return append(append(head, s[strings.IndexByte(s, '(')+1:i]), strings.Fields(s[i+1:])...), nil
}

// ---- the manager process ----

type manager struct {
	cmd          *exec.Cmd
	metricsURL   string
	logPath      string
	mu           sync.Mutex
	peakRSS      int64 // bytes, sampled
	done         chan struct{}
	samplingDone chan struct{}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startManager(o options, bin, kubeconfig, tmp string) (*manager, error) {
	mp, err := freePort()
	if err != nil {
		return nil, err
	}
	pp, err := freePort()
	if err != nil {
		return nil, err
	}
	m := &manager{metricsURL: fmt.Sprintf("http://127.0.0.1:%d/metrics", mp), logPath: o.managerLogs,
		done: make(chan struct{}), samplingDone: make(chan struct{})}
	if m.logPath == "" {
		m.logPath = filepath.Join(os.TempDir(), "bench-operator-manager.log")
	}
	logf, err := os.Create(m.logPath)
	if err != nil {
		return nil, err
	}
	m.cmd = exec.Command(bin,
		"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", mp),
		// Plain HTTP on loopback: the benchmark reads the request counter without a token
		// (the secure default needs TokenReview credentials it does not have).
		"--metrics-secure=false",
		// No stage pod reports progress here.
		"--progress-bind-address=0",
		"--health-probe-bind-address", fmt.Sprintf("127.0.0.1:%d", pp),
		"--max-concurrent-reconciles", strconv.Itoa(o.reconciles),
		"--kube-api-qps", strconv.FormatFloat(o.qps, 'g', -1, 64),
		"--kube-api-burst", strconv.Itoa(o.burst),
		"--zap-log-level", "error")
	m.cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	m.cmd.Stdout, m.cmd.Stderr = logf, logf
	if err := m.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { _ = m.cmd.Wait(); close(m.done) }()
	go m.sampleRSS()
	ready := fmt.Sprintf("http://127.0.0.1:%d/readyz", pp)
	for deadline := time.Now().Add(60 * time.Second); ; {
		select {
		case <-m.done:
			return nil, fmt.Errorf("the manager exited (log: %s)", m.logPath)
		default:
		}
		if resp, err := http.Get(ready); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return m, nil
			}
		}
		if time.Now().After(deadline) {
			m.stop()
			return nil, fmt.Errorf("the manager was not ready within 60s (log: %s)", m.logPath)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (m *manager) stop() {
	if m.cmd.Process != nil {
		_ = m.cmd.Process.Signal(os.Interrupt)
		select {
		case <-m.done:
		case <-time.After(10 * time.Second):
			_ = m.cmd.Process.Kill()
			<-m.done
		}
	}
	<-m.samplingDone
}

// sampleRSS polls the manager's resident set (VmRSS) until it exits; VmHWM is read as well, so
// a peak between two samples is not missed.
func (m *manager) sampleRSS() {
	defer close(m.samplingDone)
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-m.done:
			return
		case <-t.C:
		}
		for _, field := range []string{"VmRSS", "VmHWM"} {
			if v, err := procStatus(m.cmd.Process.Pid, field); err == nil {
				m.mu.Lock()
				m.peakRSS = max(m.peakRSS, v)
				m.mu.Unlock()
			}
		}
	}
}

func (m *manager) peak() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.peakRSS
}

// procStatus reads a "kB" field of /proc/<pid>/status, in bytes.
func procStatus(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || name != field {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		return kb * 1024, err
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// requests is the manager's client-go request count so far (rest_client_requests_total, all
// codes, methods and hosts).
func (m *manager) requests() (float64, error) {
	resp, err := http.Get(m.metricsURL)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	return sumCounter(string(body), "rest_client_requests_total")
}

// sumCounter adds up every series of a counter in the Prometheus text format.
func sumCounter(text, name string) (float64, error) {
	total, found := 0.0, false
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("metric line %q: %w", line, err)
		}
		total, found = total+v, true
	}
	if !found {
		return 0, fmt.Errorf("the manager exports no %s", name)
	}
	return total, nil
}

// ---- the driver: plays the Job controller and the stage pods ----

type driver struct {
	c       client.Client
	workers int
	stage   time.Duration
	queue   chan *batchv1.Job

	mu        sync.Mutex
	completed map[string]time.Time // run -> when its last Job was marked Complete
	latencies []time.Duration      // completion -> next Job observed
	seen      map[string]bool
	jobs      int
	errs      []error
}

func newDriver(c client.Client, workers int, stage time.Duration) *driver {
	return &driver{c: c, workers: workers, stage: stage, queue: make(chan *batchv1.Job, 1<<16),
		completed: map[string]time.Time{}, seen: map[string]bool{}}
}

// observe is the informer's Add handler: it times the gap since the run's previous Job
// completed and queues the Job to be completed.
func (d *driver) observe(job *batchv1.Job) {
	now := time.Now()
	run := job.Labels[alignv1.LabelRun]
	d.mu.Lock()
	if d.seen[job.Name] {
		d.mu.Unlock()
		return
	}
	d.seen[job.Name] = true
	if t, ok := d.completed[run]; ok {
		d.latencies = append(d.latencies, now.Sub(t))
		delete(d.completed, run)
	}
	d.mu.Unlock()
	job = job.DeepCopy()
	if d.stage <= 0 {
		d.queue <- job
		return
	}
	// The stage "runs" for stage ± 50%; then a worker completes it.
	time.AfterFunc(time.Duration((0.5+rand.Float64())*float64(d.stage)), func() { d.queue <- job })
}

func (d *driver) work(ctx context.Context) {
	var wg sync.WaitGroup
	for range d.workers {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case job := <-d.queue:
					d.complete(ctx, job)
				}
			}
		})
	}
	wg.Wait()
}

func (d *driver) complete(ctx context.Context, job *batchv1.Job) {
	stage, phase := job.Labels[alignv1.LabelStage], job.Labels[alignv1.LabelPhase]
	// The API server fills in the Job's selector; the informer's copy of a just-created Job has
	// it, but read the Job again so the status update does not conflict with a later write.
	fresh := &batchv1.Job{}
	if err := d.c.Get(ctx, client.ObjectKeyFromObject(job), fresh); err != nil {
		d.fail(fmt.Errorf("reading Job %s: %w", job.Name, err))
		return
	}
	err := testutil.SucceedJob(ctx, d.c, fresh, func(i int32) alignv1.StageResult { return stageResult(stage, phase, i) })
	if err != nil {
		d.fail(fmt.Errorf("completing Job %s: %w", job.Name, err))
		return
	}
	d.mu.Lock()
	d.completed[job.Labels[alignv1.LabelRun]] = time.Now()
	d.jobs++
	d.mu.Unlock()
}

func (d *driver) fail(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.errs) < 5 {
		fmt.Fprintln(os.Stderr, "driver:", err)
	}
	d.errs = append(d.errs, err)
}

// stageResult is a plausible successful result of completion i of a stage of phase phaseLabel.
func stageResult(stage, phaseLabel string, i int32) alignv1.StageResult {
	k, _ := strconv.Atoi(phaseLabel)
	r := alignv1.StageResult{Stage: stage, Phase: int32(k), Index: i, DurationSeconds: 1}
	f := func(v float64) *float64 { return &v }
	switch stage {
	case alignv1.StageSample:
		r.Samples, r.Pairs, r.Identical = 32, 15, 1
	case alignv1.StageLabel:
		r.Pairs, r.Ties = 14, 1
	case alignv1.StageTrain:
		r.Loss, r.RewardAccuracy, r.RewardMargin = f(0.6), f(0.7), f(0.2)
		r.KLToReference, r.KLToInitial, r.Steps = f(0.05), f(0.1), 4
		r.Checkpoint = fmt.Sprintf("phase-%d/members/member-%d", k, i)
	case alignv1.StageEval:
		r.WinRate, r.GoldReward, r.KLToInitial = f(0.4), f(0.2), f(0.1)
		r.MeanLength, r.Distinct2 = f(30), f(0.8)
	}
	return r
}

// ---- runs ----

func createRuns(ctx context.Context, c client.Client, ns string, o options) error {
	names := make(chan int)
	errc := make(chan error, o.creators)
	var wg sync.WaitGroup
	for range o.creators {
		wg.Go(func() {
			for i := range names {
				run := testutil.MakeRun(ns, fmt.Sprintf("load-%04d", i)).
					Phases(int32(o.phases)).Members(int32(o.members)).EvalEveryPhase(true).Obj()
				if err := c.Create(ctx, run); err != nil {
					errc <- fmt.Errorf("creating %s: %w", run.Name, err)
					return
				}
			}
		})
	}
	var err error
feed:
	for i := range o.runs {
		select {
		case names <- i:
		case err = <-errc:
			break feed
		}
	}
	close(names)
	wg.Wait()
	if err != nil {
		return err
	}
	select {
	case err = <-errc:
	default:
	}
	return err
}

func waitSucceeded(ctx context.Context, c client.Client, ns string, want int, start time.Time) error {
	last := time.Now()
	for {
		var list alignv1.AlignmentRunList
		if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return err
		}
		succeeded, failed := 0, 0
		for _, r := range list.Items {
			switch {
			case meta.IsStatusConditionTrue(r.Status.Conditions, alignv1.ConditionSucceeded):
				succeeded++
			case meta.IsStatusConditionTrue(r.Status.Conditions, alignv1.ConditionFailed):
				failed++
				c := meta.FindStatusCondition(r.Status.Conditions, alignv1.ConditionFailed)
				return fmt.Errorf("run %s failed: %s", r.Name, c.Message)
			}
		}
		if succeeded == want {
			return nil
		}
		if time.Since(last) > 10*time.Second {
			fmt.Fprintf(os.Stderr, "[%4.0fs] %d of %d runs succeeded\n", time.Since(start).Seconds(), succeeded, want)
			last = time.Now()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d runs succeeded before the timeout: %w", succeeded, want, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

// ---- the figures ----

func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func report(o options, d *driver, m *manager, wall, created time.Duration, requests float64, cpu map[string]time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	transitions := d.jobs // each completed Job is one stage transition (the last one: to Succeeded)
	fmt.Printf("\nbench-operator: %d AlignmentRuns x %d phase(s), %d member(s), stages of %s; manager --max-concurrent-reconciles %d --kube-api-qps %g --kube-api-burst %d; %d CPUs\n\n",
		o.runs, o.phases, o.members, o.stage, o.reconciles, o.qps, o.burst, runtime.NumCPU())
	fmt.Printf("| figure | value | goal |\n|---|---:|---:|\n")
	fmt.Printf("| stage Jobs completed | %d | |\n", transitions)
	fmt.Printf("| wall time (all runs created -> all Succeeded) | %.1f s (creating them: %.1f s) | |\n", wall.Seconds(), created.Seconds())
	fmt.Printf("| stage transitions per second | %.1f | |\n", float64(transitions)/wall.Seconds())
	fmt.Printf("| manager peak RSS | %.0f MiB | < 256 MiB |\n", float64(m.peak())/(1<<20))
	fmt.Printf("| Job complete -> next Job created, p50 | %s | |\n", percentile(d.latencies, 0.50).Round(time.Millisecond))
	fmt.Printf("| Job complete -> next Job created, p99 | %s | < 1 s |\n", percentile(d.latencies, 0.99).Round(time.Millisecond))
	fmt.Printf("| Job complete -> next Job created, max | %s (%d gaps) | |\n", percentile(d.latencies, 1).Round(time.Millisecond), len(d.latencies))
	fmt.Printf("| manager API requests per stage transition | %.1f | |\n", requests/float64(max(transitions, 1)))
	names := slices.Sorted(maps.Keys(cpu))
	for _, n := range names {
		fmt.Printf("| CPU of %s | %.1f s (%.0f%% of one core) | |\n", n, cpu[n].Seconds(), 100*cpu[n].Seconds()/wall.Seconds())
	}
	if len(d.errs) > 0 {
		fmt.Printf("\ndriver errors: %d (first: %v)\n", len(d.errs), d.errs[0])
	}
}
