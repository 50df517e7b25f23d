//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
)

const (
	namespace = "e2e"
	nodeName  = "e2e-node"
)

var env struct {
	root      string // repository root
	dir       string // E2E_DIR
	agentRoot string // podagent --root
	podBin    string // podagent --bin-dir
	agentBin  string
	cs        kubernetes.Interface
	agent     *exec.Cmd
	agentMu   sync.Mutex
}

// timings collected for the summary printed at the end.
var (
	timingsMu sync.Mutex
	timings   []string
)

func record(t testing.TB, what string, d time.Duration) {
	line := fmt.Sprintf("%-55s %8.2fs", what, d.Seconds())
	if t != nil {
		t.Log("timing: " + line)
	}
	timingsMu.Lock()
	timings = append(timings, line)
	timingsMu.Unlock()
}

func TestMain(m *testing.M) {
	os.Exit(mainE2E(m))
}

func mainE2E(m *testing.M) (code int) {
	t0 := time.Now()
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, "e2e setup: "+format+"\n", args...)
		return 1
	}
	root, err := repoRoot()
	if err != nil {
		return fail("%v", err)
	}
	env.root = root
	keep := os.Getenv("E2E_KEEP") == "1"
	if d := os.Getenv("E2E_DIR"); d != "" {
		env.dir = d
		keep = true
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fail("%v", err)
		}
	} else if env.dir, err = os.MkdirTemp("", "bpo-e2e-"); err != nil {
		return fail("%v", err)
	}
	env.dir, _ = filepath.Abs(env.dir)
	env.agentRoot = filepath.Join(env.dir, "agent")
	env.podBin = filepath.Join(env.dir, "podbin")
	env.agentBin = filepath.Join(env.dir, "bin", "podagent")
	fmt.Printf("e2e: E2E_DIR=%s\n", env.dir)

	// 1. control-plane binaries (cached; built once per machine by hack/k8s-binaries.sh)
	binDir := os.Getenv("K8S_BIN_DIR")
	if binDir == "" {
		t := time.Now()
		out, err := runCmd(exec.Command(filepath.Join(root, "hack/k8s-binaries.sh")), true)
		if err != nil {
			return fail("hack/k8s-binaries.sh: %v", err)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		binDir = lines[len(lines)-1]
		record(nil, "k8s binaries (hack/k8s-binaries.sh)", time.Since(t))
	}

	// 2. the cluster; down on every way out (the script's watchdog covers SIGKILL of this process)
	clusterEnv := append(os.Environ(), "E2E_DIR="+env.dir, "K8S_BIN_DIR="+binDir, fmt.Sprintf("E2E_WATCH_PID=%d", os.Getpid()))
	down := func() {
		stopAgent(syscall.SIGTERM)
		c := exec.Command(filepath.Join(root, "hack/e2e-cluster.sh"), "down")
		c.Env = clusterEnv
		if _, err := runCmd(c, true); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: down: %v\n", err)
		}
	}
	var downOnce sync.Once
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "e2e: %v: stopping the cluster\n", s)
		downOnce.Do(down)
		os.Exit(2)
	}()
	defer func() {
		signal.Stop(sigs)
		downOnce.Do(down)
		if code != 0 {
			keep = true
		}
		if keep {
			fmt.Printf("e2e: state kept in %s (logs/, agent/logs/)\n", env.dir)
		} else {
			_ = os.RemoveAll(env.dir)
		}
		record(nil, "total (setup + tests + teardown)", time.Since(t0))
		fmt.Println("e2e timings:")
		for _, l := range timings {
			fmt.Println("  " + l)
		}
	}()

	// build the agent while the cluster comes up
	buildErr := make(chan error, 1)
	go func() {
		t := time.Now()
		c := exec.Command("go", "build", "-o", env.agentBin, "./test/e2e/podagent")
		c.Dir = root
		_, err := runCmd(c, true)
		record(nil, "go build podagent", time.Since(t))
		buildErr <- err
	}()

	t := time.Now()
	up := exec.Command(filepath.Join(root, "hack/e2e-cluster.sh"), "up")
	up.Env = clusterEnv
	if _, err := runCmd(up, true); err != nil {
		<-buildErr
		return fail("hack/e2e-cluster.sh up: %v", err)
	}
	record(nil, "hack/e2e-cluster.sh up", time.Since(t))
	if err := <-buildErr; err != nil {
		return fail("building podagent: %v", err)
	}

	cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(env.dir, "kubeconfig"))
	if err != nil {
		return fail("%v", err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	if env.cs, err = kubernetes.NewForConfig(cfg); err != nil {
		return fail("%v", err)
	}

	// the pods' bin dir: only what the tests' containers run
	if err := os.MkdirAll(env.podBin, 0o755); err != nil {
		return fail("%v", err)
	}
	for _, b := range []string{"sh", "sleep"} {
		p, err := exec.LookPath(b)
		if err != nil {
			return fail("%v", err)
		}
		_ = os.Remove(filepath.Join(env.podBin, b))
		if err := os.Symlink(p, filepath.Join(env.podBin, b)); err != nil {
			return fail("%v", err)
		}
	}

	t = time.Now()
	if err := startAgent(); err != nil {
		return fail("%v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := waitNodeSchedulable(ctx); err != nil {
		return fail("node: %v", err)
	}
	record(nil, "podagent start -> node Ready and schedulable", time.Since(t))
	t = time.Now()
	if err := setupNamespace(ctx); err != nil {
		return fail("namespace: %v", err)
	}
	record(nil, "namespace + default ServiceAccount", time.Since(t))
	return m.Run()
}

// runCmd runs c, echoing its stderr (and stdout) to ours, and returns its stdout.
func runCmd(c *exec.Cmd, echo bool) (string, error) {
	var out bytes.Buffer
	c.Stdout = &out
	if echo {
		c.Stderr = os.Stderr
	}
	err := c.Run()
	if echo && out.Len() > 0 {
		os.Stderr.Write(out.Bytes())
	}
	return out.String(), err
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

func startAgent() error {
	env.agentMu.Lock()
	defer env.agentMu.Unlock()
	logf, err := os.OpenFile(filepath.Join(env.dir, "logs", "podagent.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	c := exec.Command(env.agentBin,
		"--kubeconfig", filepath.Join(env.dir, "kubeconfig"),
		"--node-name", nodeName,
		"--root", env.agentRoot,
		"--bin-dir", env.podBin,
		"--cpu", "8", "--memory", "16Gi",
		"--max-grace", "5s")
	c.Stdout, c.Stderr = logf, logf
	c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.Start(); err != nil {
		logf.Close()
		return err
	}
	// record the pid like the script does, so `hack/e2e-cluster.sh down` also stops it
	_ = os.WriteFile(filepath.Join(env.dir, "run", "podagent.pid"), []byte(strconv.Itoa(c.Process.Pid)), 0o644)
	_ = os.WriteFile(filepath.Join(env.dir, "run", "podagent.cmd"), []byte(env.agentBin), 0o644)
	env.agent = c
	go func() { _ = c.Wait(); logf.Close() }()
	return nil
}

func stopAgent(sig syscall.Signal) {
	env.agentMu.Lock()
	defer env.agentMu.Unlock()
	if env.agent == nil || env.agent.Process == nil {
		return
	}
	_ = env.agent.Process.Signal(sig)
	for i := 0; i < 100; i++ {
		if syscall.Kill(env.agent.Process.Pid, 0) != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = env.agent.Process.Kill()
	env.agent = nil
	_ = os.Remove(filepath.Join(env.dir, "run", "podagent.pid"))
}

// poll calls f every interval until it returns true or an error, or ctx ends.
func poll(ctx context.Context, interval time.Duration, f func() (bool, error)) error {
	for {
		ok, err := f()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

func waitNodeSchedulable(ctx context.Context) error {
	var last string
	err := poll(ctx, 200*time.Millisecond, func() (bool, error) {
		n, err := env.cs.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			last = "not registered"
			return false, nil
		}
		if err != nil {
			return false, err
		}
		ready := false
		for _, c := range n.Status.Conditions {
			ready = ready || (c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue)
		}
		last = fmt.Sprintf("ready=%v taints=%v", ready, n.Spec.Taints)
		for _, t := range n.Spec.Taints {
			if t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute {
				return false, nil
			}
		}
		return ready, nil
	})
	if err != nil {
		return fmt.Errorf("%w (%s)", err, last)
	}
	return nil
}

func setupNamespace(ctx context.Context) error {
	_, err := env.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	// pods are rejected until the service-account controller made the default ServiceAccount
	return poll(ctx, 100*time.Millisecond, func() (bool, error) {
		_, err := env.cs.CoreV1().ServiceAccounts(namespace).Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, err
	})
}

// ------------------------------------------------------------------ pod timeline

// timeline records when pods matching a label selector were first seen in each state.
type timeline struct {
	mu      sync.Mutex
	created map[types.UID]time.Time
	running map[types.UID]time.Time
	names   map[types.UID]string
	stop    func()
}

func watchPods(t *testing.T, selector string) *timeline {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w, err := env.cs.CoreV1().Pods(namespace).Watch(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	tl := &timeline{created: map[types.UID]time.Time{}, running: map[types.UID]time.Time{}, names: map[types.UID]string{}}
	tl.stop = func() { cancel(); w.Stop() }
	go func() {
		for ev := range w.ResultChan() {
			p, ok := ev.Object.(*corev1.Pod)
			if !ok || ev.Type == watch.Error {
				continue
			}
			now := time.Now()
			tl.mu.Lock()
			if _, ok := tl.created[p.UID]; !ok {
				tl.created[p.UID] = now
				tl.names[p.UID] = p.Name
			}
			if _, ok := tl.running[p.UID]; !ok && p.Status.Phase == corev1.PodRunning {
				tl.running[p.UID] = now
			}
			tl.mu.Unlock()
		}
	}()
	t.Cleanup(tl.stop)
	return tl
}

func (tl *timeline) firstRunning() (time.Time, bool) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	var first time.Time
	for _, r := range tl.running {
		if first.IsZero() || r.Before(first) {
			first = r
		}
	}
	return first, !first.IsZero()
}

func (tl *timeline) firstCreated() time.Time {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	var first time.Time
	for _, r := range tl.created {
		if first.IsZero() || r.Before(first) {
			first = r
		}
	}
	return first
}

// ------------------------------------------------------------------ helpers

func indexedJob(name string, completions int32, script string) *batchv1.Job {
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: batchv1.JobSpec{
			CompletionMode: ptr.To(batchv1.IndexedCompletion),
			Completions:    ptr.To(completions),
			Parallelism:    ptr.To(completions),
			BackoffLimit:   ptr.To[int32](6),
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
				RestartPolicy: corev1.RestartPolicyNever,
				Containers: []corev1.Container{{
					Name:    "bpo",
					Image:   "ghcr.io/bpo-dev/bpo:e2e",
					Command: []string{"sh", "-c", script},
				}},
			}},
		},
	}
}

func jobCondition(j *batchv1.Job, t batchv1.JobConditionType) bool {
	for _, c := range j.Status.Conditions {
		if c.Type == t && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

func deleteJob(t *testing.T, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := env.cs.BatchV1().Jobs(namespace).Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationBackground)})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("delete job %s: %v", name, err)
		return
	}
	// the garbage collector deletes the pods; the agent must finish them off (grace 0)
	err = poll(ctx, 200*time.Millisecond, func() (bool, error) {
		l, err := env.cs.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "batch.kubernetes.io/job-name=" + name})
		return err == nil && len(l.Items) == 0, err
	})
	if err != nil {
		t.Errorf("pods of job %s still exist after deleting it: %v", name, err)
	}
}

func dumpOnFailure(t *testing.T) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, f := range []string{"logs/podagent.log", "logs/kube-controller-manager.log", "logs/kube-scheduler.log"} {
			t.Logf("---- tail of %s:\n%s", f, tailFile(filepath.Join(env.dir, f), 25))
		}
	})
}

func tailFile(p string, n int) string {
	f, err := os.Open(p)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// groupAlive reports whether a live (non-zombie) process is in process group pgid. Zombies are
// ignored: orphans are reaped by pid 1, which on some machines takes a second or more.
func groupAlive(pgid int) bool {
	if syscall.Kill(-pgid, 0) != nil {
		return false
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) >= 3 && f[0] != "Z" && f[0] != "X" && f[2] == strconv.Itoa(pgid) {
			return true
		}
	}
	return false
}

func readPid(t *testing.T, uid types.UID, container string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(env.agentRoot, "pods", string(uid), container+".pid"))
	if err != nil {
		t.Fatalf("pid file: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// waitRunningPod returns a Running pod of the job whose UID is not in exclude.
func waitRunningPod(ctx context.Context, t *testing.T, job string, exclude ...types.UID) *corev1.Pod {
	t.Helper()
	var found *corev1.Pod
	err := poll(ctx, 100*time.Millisecond, func() (bool, error) {
		l, err := env.cs.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "batch.kubernetes.io/job-name=" + job})
		if err != nil {
			return false, err
		}
	next:
		for i := range l.Items {
			p := &l.Items[i]
			for _, u := range exclude {
				if p.UID == u {
					continue next
				}
			}
			if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
				found = p
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no running pod of job %s: %v", job, err)
	}
	return found
}

// ------------------------------------------------------------------ tests

// (a) An Indexed Job whose pods write their index into the termination log.
func TestIndexedJobTerminationMessages(t *testing.T) {
	dumpOnFailure(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const name = "indexed"
	tl := watchPods(t, "batch.kubernetes.io/job-name="+name)
	job := indexedJob(name, 2, `echo "{\"stage\":\"x\",\"index\":$JOB_COMPLETION_INDEX}" > /dev/termination-log`)
	t0 := time.Now()
	if _, err := env.cs.BatchV1().Jobs(namespace).Create(ctx, job, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var j *batchv1.Job
	err := poll(ctx, 100*time.Millisecond, func() (bool, error) {
		var err error
		j, err = env.cs.BatchV1().Jobs(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if jobCondition(j, batchv1.JobFailed) {
			return false, fmt.Errorf("job failed: %+v", j.Status)
		}
		return jobCondition(j, batchv1.JobComplete), nil
	})
	if err != nil {
		t.Fatalf("job did not complete: %v", err)
	}
	done := time.Since(t0)
	record(t, "(a) Job create -> first pod created", tl.firstCreated().Sub(t0))
	if r, ok := tl.firstRunning(); ok {
		record(t, "(a) Job create -> first pod Running", r.Sub(t0))
	} else {
		t.Error("no pod was ever seen Running")
	}
	record(t, "(a) Job create -> Job Complete (2 indexed pods)", done)
	if j.Status.Succeeded != 2 {
		t.Errorf("succeeded = %d, want 2", j.Status.Succeeded)
	}

	pods, err := env.cs.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "batch.kubernetes.io/job-name=" + name})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range pods.Items {
		if p.Status.Phase != corev1.PodSucceeded {
			t.Errorf("pod %s phase %s", p.Name, p.Status.Phase)
			continue
		}
		idx, err := strconv.Atoi(p.Annotations["batch.kubernetes.io/job-completion-index"])
		if err != nil {
			t.Errorf("pod %s: completion index annotation: %v", p.Name, err)
			continue
		}
		if len(p.Status.ContainerStatuses) != 1 || p.Status.ContainerStatuses[0].State.Terminated == nil {
			t.Errorf("pod %s: container statuses %+v", p.Name, p.Status.ContainerStatuses)
			continue
		}
		term := p.Status.ContainerStatuses[0].State.Terminated
		var msg struct {
			Stage string `json:"stage"`
			Index int    `json:"index"`
		}
		if err := json.Unmarshal([]byte(term.Message), &msg); err != nil {
			t.Errorf("pod %s: termination message %q: %v", p.Name, term.Message, err)
			continue
		}
		if msg.Stage != "x" || msg.Index != idx || term.ExitCode != 0 || term.Reason != "Completed" {
			t.Errorf("pod %s (index %d): terminated %+v, message %+v", p.Name, idx, term, msg)
		}
		if p.Status.PodIP != "127.0.0.1" || p.Spec.NodeName != nodeName {
			t.Errorf("pod %s: podIP %q node %q", p.Name, p.Status.PodIP, p.Spec.NodeName)
		}
		seen[idx] = true
		t.Logf("pod %s index %d: exit %d, message %s", p.Name, idx, term.ExitCode, strings.TrimSpace(term.Message))
	}
	if !seen[0] || !seen[1] {
		t.Errorf("indices seen %v, want 0 and 1", seen)
	}
	deleteJob(t, name)
}

// (b) A pod with a PVC (subPath) and a ConfigMap volume: the PVC is bound by the agent's hostPath
// provisioner, mount paths in args and env are rewritten, and the file lands under <root>/pvc/.
func TestPVCAndConfigMap(t *testing.T) {
	dumpOnFailure(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const runYAML = "apiVersion: alignment.bpo.dev/v1alpha1\nkind: AlignmentRun\nmetadata:\n  name: demo\n"
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "demo-spec", Namespace: namespace}, Data: map[string]string{"run.yaml": runYAML}}
	if _, err := env.cs.CoreV1().ConfigMaps(namespace).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "workspace", Namespace: namespace},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("10Mi")}},
		},
	}
	script := `set -e
cp /etc/bpo/run.yaml /workspace/run.yaml
echo "$POD_NAME" > /workspace/hello.txt
echo "$1" > /workspace/arg.txt
echo "$WS" > /workspace/env.txt
printf '{"ok":true}' > /dev/termination-log`
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "pvc-writer", Namespace: namespace},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Volumes: []corev1.Volume{
				{Name: "workspace", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "workspace"}}},
				{Name: "spec", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "demo-spec"}}}},
			},
			Containers: []corev1.Container{{
				Name: "bpo", Image: "ghcr.io/bpo-dev/bpo:e2e",
				Command: []string{"sh", "-c", script, "sh", "--workspace=/workspace/$(RUN)"},
				Env: []corev1.EnvVar{
					{Name: "RUN", Value: "demo"},
					{Name: "WS", Value: "/workspace"},
					{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
				},
				VolumeMounts: []corev1.VolumeMount{
					{Name: "workspace", MountPath: "/workspace", SubPath: "runs/demo"},
					{Name: "spec", MountPath: "/etc/bpo", ReadOnly: true},
				},
			}},
		},
	}
	t0 := time.Now()
	if _, err := env.cs.CoreV1().PersistentVolumeClaims(namespace).Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := env.cs.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var boundAt time.Duration
	var p *corev1.Pod
	err := poll(ctx, 100*time.Millisecond, func() (bool, error) {
		if boundAt == 0 {
			c, err := env.cs.CoreV1().PersistentVolumeClaims(namespace).Get(ctx, "workspace", metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			if c.Status.Phase == corev1.ClaimBound {
				boundAt = time.Since(t0)
				t.Logf("pvc bound to %s (class %q)", c.Spec.VolumeName, ptr.Deref(c.Spec.StorageClassName, ""))
			}
		}
		var err error
		p, err = env.cs.CoreV1().Pods(namespace).Get(ctx, "pvc-writer", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed, nil
	})
	if err != nil {
		t.Fatalf("pod did not finish: %v (phase %s)", err, p.Status.Phase)
	}
	record(t, "(b) PVC+pod create -> PVC Bound", boundAt)
	record(t, "(b) PVC+pod create -> pod Succeeded", time.Since(t0))
	if p.Status.Phase != corev1.PodSucceeded {
		t.Fatalf("pod %s: %+v", p.Status.Phase, p.Status.ContainerStatuses)
	}
	if msg := p.Status.ContainerStatuses[0].State.Terminated.Message; msg != `{"ok":true}` {
		t.Errorf("termination message %q", msg)
	}
	local := filepath.Join(env.agentRoot, "pvc", namespace, "workspace", "runs", "demo")
	want := map[string]string{
		"hello.txt": "pvc-writer\n",
		"run.yaml":  runYAML,
		"arg.txt":   "--workspace=" + local + "/demo\n",
		"env.txt":   local + "\n",
	}
	for f, w := range want {
		b, err := os.ReadFile(filepath.Join(local, f))
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		if string(b) != w {
			t.Errorf("%s = %q, want %q", f, b, w)
		}
	}
	if err := env.cs.CoreV1().Pods(namespace).Delete(ctx, "pvc-writer", metav1.DeleteOptions{}); err != nil {
		t.Error(err)
	}
	err = poll(ctx, 100*time.Millisecond, func() (bool, error) {
		_, err := env.cs.CoreV1().Pods(namespace).Get(ctx, "pvc-writer", metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		t.Errorf("finished pod not removed after delete: %v", err)
	}
}

// (c) Deleting a running pod kills its process group quickly, the pod disappears, and the Job
// creates a replacement.
func TestDeleteRunningPod(t *testing.T) {
	dumpOnFailure(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const name = "sleeper"
	tl := watchPods(t, "batch.kubernetes.io/job-name="+name)
	job := indexedJob(name, 1, `sleep 100; echo finished`)
	t0 := time.Now()
	if _, err := env.cs.BatchV1().Jobs(namespace).Create(ctx, job, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer deleteJob(t, name)
	p := waitRunningPod(ctx, t, name)
	if r, ok := tl.firstRunning(); ok {
		record(t, "(c) Job create -> pod Running", r.Sub(t0))
	}
	pgid := readPid(t, p.UID, "bpo")
	if !groupAlive(pgid) {
		t.Fatalf("process group %d of running pod %s is not alive", pgid, p.Name)
	}

	t1 := time.Now()
	if err := env.cs.CoreV1().Pods(namespace).Delete(ctx, p.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := poll(ctx, 20*time.Millisecond, func() (bool, error) { return !groupAlive(pgid), nil }); err != nil {
		t.Fatalf("process group %d still alive: %v", pgid, err)
	}
	killed := time.Since(t1)
	record(t, "(c) pod delete -> process group gone", killed)
	if killed > 5*time.Second {
		t.Errorf("killing took %v", killed)
	}
	err := poll(ctx, 50*time.Millisecond, func() (bool, error) {
		cur, err := env.cs.CoreV1().Pods(namespace).Get(ctx, p.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) || (err == nil && cur.UID != p.UID) {
			return true, nil
		}
		return false, err
	})
	if err != nil {
		t.Fatalf("pod %s not gone: %v", p.Name, err)
	}
	gone := time.Since(t1)
	record(t, "(c) pod delete -> pod object gone", gone)
	if gone > 15*time.Second {
		t.Errorf("pod removal took %v", gone)
	}
	repl := waitRunningPod(ctx, t, name, p.UID)
	record(t, "(c) pod delete -> replacement Running", time.Since(t1))
	t.Logf("replacement pod %s (index %s)", repl.Name, repl.Annotations["batch.kubernetes.io/job-completion-index"])
	j, err := env.cs.BatchV1().Jobs(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("job status: active=%d failed=%d succeeded=%d", j.Status.Active, j.Status.Failed, j.Status.Succeeded)
	if j.Status.Failed < 1 {
		// counted once the job controller has seen the terminal, removed pod
		_ = poll(ctx, 100*time.Millisecond, func() (bool, error) {
			j, err = env.cs.BatchV1().Jobs(namespace).Get(ctx, name, metav1.GetOptions{})
			return err == nil && j.Status.Failed >= 1, err
		})
		if j.Status.Failed < 1 {
			t.Errorf("job status.failed = %d, want >= 1", j.Status.Failed)
		}
	}
}

// (d) An agent that dies (SIGKILL) takes its direct children with it (Pdeathsig); when it comes
// back it kills what they started (found through its pid files), marks the pods that were running
// Failed (AgentRestarted), and their Job replaces them.
func TestAgentRestart(t *testing.T) {
	dumpOnFailure(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const name = "restart"
	job := indexedJob(name, 1, `sleep 100; echo finished`)
	if _, err := env.cs.BatchV1().Jobs(namespace).Create(ctx, job, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer deleteJob(t, name)
	p := waitRunningPod(ctx, t, name)
	pgid := readPid(t, p.UID, "bpo")

	t1 := time.Now()
	stopAgent(syscall.SIGKILL)
	if err := startAgent(); err != nil {
		t.Fatal(err)
	}
	if err := poll(ctx, 20*time.Millisecond, func() (bool, error) { return !groupAlive(pgid), nil }); err != nil {
		t.Fatalf("process group %d survived the agent's restart: %v", pgid, err)
	}
	record(t, "(d) agent SIGKILL+restart -> old processes gone", time.Since(t1))
	err := poll(ctx, 100*time.Millisecond, func() (bool, error) {
		cur, err := env.cs.CoreV1().Pods(namespace).Get(ctx, p.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return cur.Status.Phase == corev1.PodFailed && cur.Status.Reason == "AgentRestarted", nil
	})
	if err != nil {
		t.Fatalf("pod %s not marked Failed/AgentRestarted: %v", p.Name, err)
	}
	record(t, "(d) agent restart -> old pod Failed (AgentRestarted)", time.Since(t1))
	waitRunningPod(ctx, t, name, p.UID)
	record(t, "(d) agent restart -> replacement Running", time.Since(t1))
}
