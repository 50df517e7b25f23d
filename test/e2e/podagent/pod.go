package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
)

const (
	maxTermMsg     = 4 * 1024 // kubelet: MaxContainerTerminationMessageLength (the last 4096 bytes)
	maxLogMsgBytes = 2 * 1024 // kubelet: MaxContainerTerminationMessageLogLength
	maxLogMsgLines = 80       // kubelet: MaxContainerTerminationMessageLogLines
	defaultTermLog = "/dev/termination-log"
	basePath       = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// execSpec is a container resolved to a local process.
type execSpec struct {
	path     string
	argv     []string
	env      []string
	dir      string
	termFile string
	err      error // command could not be resolved: the container fails to start (StartError)
}

// proc is a started container process.
type proc struct {
	cmd    *exec.Cmd
	pgid   int
	tail   *tailBuffer
	copied chan struct{} // closed when the output pipe reached EOF
}

// podWorker runs one pod from start to deletion.
type podWorker struct {
	a      *agent
	uid    types.UID
	ns     string
	name   string
	pod    *corev1.Pod // snapshot of the pod when the worker started (spec is immutable)
	dir    string
	logger interface {
		Info(string, ...any)
		Warn(string, ...any)
		Error(string, ...any)
	}

	delOnce   sync.Once
	delReq    chan struct{} // closed when the pod is being deleted
	grace     time.Duration
	forceOnce sync.Once
	deleted   sync.Once
	done      chan struct{}

	pushMu sync.Mutex // serialises status updates
	mu     sync.Mutex // guards everything below
	procs  map[string]*proc
	phase  corev1.PodPhase
	reason string
	msg    string
	sandbox,
	initialized bool
	initStatus map[string]corev1.ContainerStatus
	status     map[string]corev1.ContainerStatus
	startTime  metav1.Time
	gone       atomic.Bool // the pod no longer exists in the API
}

func (a *agent) newWorker(pod *corev1.Pod) *podWorker {
	return &podWorker{
		a: a, uid: pod.UID, ns: pod.Namespace, name: pod.Name, pod: pod.DeepCopy(),
		dir:        filepath.Join(a.opts.root, "pods", string(pod.UID)),
		logger:     a.log.With("pod", pod.Namespace+"/"+pod.Name, "uid", string(pod.UID)),
		delReq:     make(chan struct{}),
		done:       make(chan struct{}),
		procs:      map[string]*proc{},
		phase:      corev1.PodPending,
		initStatus: map[string]corev1.ContainerStatus{},
		status:     map[string]corev1.ContainerStatus{},
		startTime:  metav1.Now(),
	}
}

func (w *podWorker) deleting() bool {
	select {
	case <-w.delReq:
		return true
	default:
		return false
	}
}

func (w *podWorker) finished() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// requestDelete starts graceful termination: SIGTERM to every process group now, SIGKILL once the
// grace period (capped by --max-grace) is over. Once all processes are gone the worker posts the
// final status and deletes the pod with grace 0.
func (w *podWorker) requestDelete(grace time.Duration) {
	if grace > w.a.opts.maxGrace {
		grace = w.a.opts.maxGrace
	}
	first := false
	w.delOnce.Do(func() {
		first = true
		w.grace = grace
		close(w.delReq)
	})
	if first {
		n := w.killAll(syscall.SIGTERM)
		w.logger.Info("pod deletion requested", "grace", grace, "signalledProcessGroups", n)
		if n > 0 {
			w.a.recorder.Eventf(w.pod, corev1.EventTypeNormal, "Killing", "Stopping containers (grace %s)", grace)
		}
		go func() {
			select {
			case <-w.done:
			case <-time.After(grace):
				if n := w.killAll(syscall.SIGKILL); n > 0 {
					w.logger.Info("grace period over: SIGKILL", "processGroups", n)
				}
			}
		}()
	}
	if grace == 0 {
		w.forceOnce.Do(func() { w.killAll(syscall.SIGKILL) })
	}
	if w.finished() {
		go w.deletePod()
	}
}

// killAll signals every running process group; returns how many were signalled.
func (w *podWorker) killAll(sig syscall.Signal) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, p := range w.procs {
		if p.cmd.ProcessState == nil {
			if err := syscall.Kill(-p.pgid, sig); err == nil {
				n++
			}
		}
	}
	return n
}

// deletePod removes the pod object with grace 0 (what a kubelet does once the containers are gone).
func (w *podWorker) deletePod() {
	w.deleted.Do(func() {
		w.a.deletePodNow(w.ns, w.name, w.uid)
	})
}

func (a *agent) deletePodNow(ns, name string, uid types.UID) {
	ctx := context.Background()
	err := retry.OnError(retry.DefaultBackoff, func(err error) bool { return !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) }, func() error {
		return a.cs.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{
			GracePeriodSeconds: ptr.To[int64](0),
			Preconditions:      &metav1.Preconditions{UID: &uid},
		})
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		a.log.Error("deleting pod failed", "pod", ns+"/"+name, "err", err)
		return
	}
	a.log.Info("pod deleted (grace 0)", "pod", ns+"/"+name, "uid", string(uid))
}

// run drives the pod: prepare volumes and processes, init containers, containers, final status.
func (w *podWorker) run() {
	defer func() {
		close(w.done)
		if w.deleting() {
			w.deletePod()
		}
	}()
	pod := w.pod
	if rp := pod.Spec.RestartPolicy; rp != "" && rp != corev1.RestartPolicyNever {
		w.logger.Info("restartPolicy is treated as Never", "restartPolicy", rp)
	}
	waitingReason := "ContainerCreating"
	if len(pod.Spec.InitContainers) > 0 {
		waitingReason = "PodInitializing"
	}
	w.mu.Lock()
	for _, c := range pod.Spec.InitContainers {
		w.initStatus[c.Name] = waitingStatus(&c, "PodInitializing", "")
	}
	for _, c := range pod.Spec.Containers {
		w.status[c.Name] = waitingStatus(&c, waitingReason, "")
	}
	w.mu.Unlock()
	w.push()

	// prepare: volumes, env, commands; retried while a referenced object is missing
	var initSpecs, specs []execSpec
	for {
		var err error
		initSpecs, specs, err = w.prepare()
		if err == nil {
			break
		}
		var perm permanentError
		if errors.As(err, &perm) {
			w.logger.Warn("pod cannot run", "err", err)
			w.a.recorder.Eventf(pod, corev1.EventTypeWarning, "Failed", "%v", err)
			w.mu.Lock()
			w.phase, w.reason, w.msg = corev1.PodFailed, "UnsupportedPodSpec", err.Error()
			now := metav1.Now()
			for _, m := range []map[string]corev1.ContainerStatus{w.initStatus, w.status} {
				for n, st := range m {
					st.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
						ExitCode: 128, Reason: "CreateContainerConfigError", Message: err.Error(), StartedAt: now, FinishedAt: now}}
					m[n] = st
				}
			}
			w.mu.Unlock()
			w.push()
			return
		}
		w.logger.Warn("preparing pod failed; retrying", "err", err)
		w.mu.Lock()
		for _, c := range pod.Spec.Containers {
			w.status[c.Name] = waitingStatus(&c, "CreateContainerConfigError", err.Error())
		}
		w.mu.Unlock()
		w.push()
		select {
		case <-w.delReq:
			return
		case <-time.After(2 * time.Second):
		}
	}
	w.mu.Lock()
	w.sandbox = true
	w.mu.Unlock()

	// init containers, one after the other
	for i := range pod.Spec.InitContainers {
		if w.deleting() {
			return
		}
		c := &pod.Spec.InitContainers[i]
		p := w.start(c, &initSpecs[i], true)
		if p != nil {
			w.push()
			w.wait(c, p, &initSpecs[i], true)
		}
		w.mu.Lock()
		ok := w.initStatus[c.Name].State.Terminated != nil && w.initStatus[c.Name].State.Terminated.ExitCode == 0
		if !ok {
			w.phase = corev1.PodFailed
			for _, cc := range pod.Spec.Containers {
				st := w.status[cc.Name]
				st.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "PodInitializing"}}
				w.status[cc.Name] = st
			}
		}
		w.mu.Unlock()
		if !ok {
			w.push()
			return
		}
	}
	w.mu.Lock()
	w.initialized = true
	w.mu.Unlock()
	if w.deleting() {
		w.finish()
		return
	}

	// containers, all at once; the pod is Running once they are started (posted before any exit)
	procs := make([]*proc, len(pod.Spec.Containers))
	for i := range pod.Spec.Containers {
		procs[i] = w.start(&pod.Spec.Containers[i], &specs[i], false)
	}
	w.mu.Lock()
	w.phase = corev1.PodRunning
	w.mu.Unlock()
	w.push()
	var wg sync.WaitGroup
	for i, p := range procs {
		if p == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.wait(&pod.Spec.Containers[i], p, &specs[i], false)
			if len(procs) > 1 {
				w.push()
			}
		}()
	}
	wg.Wait()
	w.finish()
}

// finish computes the terminal phase (restartPolicy Never) and posts it.
func (w *podWorker) finish() {
	w.mu.Lock()
	phase := corev1.PodSucceeded
	for _, c := range w.pod.Spec.Containers {
		t := w.status[c.Name].State.Terminated
		if t == nil || t.ExitCode != 0 {
			phase = corev1.PodFailed
		}
		if t == nil {
			st := w.status[c.Name]
			now := metav1.Now()
			st.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: 137, Reason: "ContainerStatusUnknown", Message: "the pod was deleted before the container started",
				StartedAt: now, FinishedAt: now}}
			w.status[c.Name] = st
		}
	}
	w.phase = phase
	w.mu.Unlock()
	w.push()
	w.logger.Info("pod finished", "phase", phase)
}

func waitingStatus(c *corev1.Container, reason, msg string) corev1.ContainerStatus {
	return corev1.ContainerStatus{
		Name: c.Name, Image: c.Image, ImageID: "podagent://" + c.Image,
		Started: ptr.To(false),
		State:   corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}},
	}
}

// prepare materialises the volumes and resolves every container to an execSpec.
func (w *podWorker) prepare() ([]execSpec, []execSpec, error) {
	ctx := context.Background()
	for _, d := range []string{"work", "termination"} {
		if err := os.MkdirAll(filepath.Join(w.dir, d), 0o777); err != nil {
			return nil, nil, err
		}
	}
	vols, err := w.a.volumePaths(ctx, w.pod, w.dir)
	if err != nil {
		return nil, nil, err
	}
	resolve := func(cs []corev1.Container, prefix string) ([]execSpec, error) {
		out := make([]execSpec, len(cs))
		for i := range cs {
			s, err := w.resolveContainer(ctx, &cs[i], prefix, vols)
			if err != nil {
				return nil, fmt.Errorf("container %s: %w", cs[i].Name, err)
			}
			out[i] = s
		}
		return out, nil
	}
	initSpecs, err := resolve(w.pod.Spec.InitContainers, "init-")
	if err != nil {
		return nil, nil, err
	}
	specs, err := resolve(w.pod.Spec.Containers, "")
	return initSpecs, specs, err
}

// imageCommand derives a command from an image reference when a container has no command
// ("ghcr.io/bpo-dev/bpo:v1" -> "bpo"), standing in for the image's entrypoint.
func imageCommand(image string) string {
	ref := image
	if i := strings.IndexByte(ref, '@'); i >= 0 {
		ref = ref[:i]
	}
	if i := strings.LastIndexByte(ref, ':'); i > strings.LastIndexByte(ref, '/') {
		ref = ref[:i]
	}
	return ref[strings.LastIndexByte(ref, '/')+1:]
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// lookupCommand finds command[0]: in --bin-dir by base name, then as an absolute path, then in the
// container's PATH.
func (a *agent) lookupCommand(name, pathEnv string) (string, error) {
	if a.opts.binDir != "" {
		if p := filepath.Join(a.opts.binDir, filepath.Base(name)); isExecutable(p) {
			return p, nil
		}
	}
	if filepath.IsAbs(name) {
		if isExecutable(name) {
			return name, nil
		}
		return "", fmt.Errorf("executable %q not found (nor %q in --bin-dir %s)", name, filepath.Base(name), a.opts.binDir)
	}
	if !strings.Contains(name, "/") {
		for _, d := range filepath.SplitList(pathEnv) {
			if p := filepath.Join(d, name); d != "" && isExecutable(p) {
				return p, nil
			}
		}
	}
	return "", fmt.Errorf("executable %q not found in --bin-dir %s or PATH", name, a.opts.binDir)
}

// resolveContainer computes the process of a container: env (with rewritten paths), argv (paths
// rewritten, then $(VAR) expanded), working directory and termination-message file.
func (w *podWorker) resolveContainer(ctx context.Context, c *corev1.Container, prefix string, vols map[string]string) (execSpec, error) {
	order, vals, err := w.a.containerEnv(ctx, w.pod, c)
	if err != nil {
		return execSpec{}, err
	}
	maps, err := mountMappings(c, vols, vals)
	if err != nil {
		return execSpec{}, err
	}
	termPath := c.TerminationMessagePath
	if termPath == "" {
		termPath = defaultTermLog
	}
	termFile := filepath.Join(w.dir, "termination", prefix+c.Name)
	if err := os.WriteFile(termFile, nil, 0o666); err != nil {
		return execSpec{}, err
	}
	maps = append(maps, pathMapping{from: filepath.Clean(termPath), to: termFile})
	sortMappings(maps)

	workDir := filepath.Join(w.dir, "work")
	env := map[string]string{
		"PATH":     basePath,
		"HOSTNAME": w.pod.Name,
		"HOME":     workDir,
		markerEnv:  string(w.uid),
	}
	if w.a.opts.binDir != "" {
		env["PATH"] = w.a.opts.binDir + ":" + basePath
	}
	keys := []string{"PATH", "HOSTNAME", "HOME", markerEnv}
	for _, k := range order {
		if _, ok := env[k]; !ok {
			keys = append(keys, k)
		}
		env[k] = rewritePaths(vals[k], maps)
	}
	envList := make([]string, 0, len(keys))
	for _, k := range keys {
		envList = append(envList, k+"="+env[k])
	}

	if c.WorkingDir != "" {
		wd := rewritePaths(c.WorkingDir, maps)
		if wd != c.WorkingDir {
			if err := os.MkdirAll(wd, 0o777); err != nil {
				return execSpec{}, err
			}
			workDir = wd
		} else if st, err := os.Stat(wd); err == nil && st.IsDir() {
			workDir = wd
		} else {
			w.logger.Warn("workingDir is not a mounted path and does not exist here; using the pod folder", "container", c.Name, "workingDir", c.WorkingDir)
		}
	}

	cmd := append([]string{}, c.Command...)
	if len(cmd) == 0 {
		cmd = []string{imageCommand(c.Image)}
	}
	argv := append(cmd, c.Args...)
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	for i := range argv {
		argv[i] = expandVars(rewritePaths(argv[i], maps), lookup)
	}
	s := execSpec{argv: argv, env: envList, dir: workDir, termFile: termFile}
	s.path, s.err = w.a.lookupCommand(argv[0], env["PATH"])
	w.logger.Info("container resolved", "container", c.Name, "image", c.Image, "path", s.path, "argv", argv, "dir", workDir, "mounts", maps, "err", s.err)
	return s, nil
}

// start launches a container's process in its own process group; on failure the container is
// marked terminated (StartError, exit code 128) and nil is returned.
func (w *podWorker) start(c *corev1.Container, s *execSpec, init bool) *proc {
	states := w.status
	if init {
		states = w.initStatus
	}
	fail := func(err error) *proc {
		w.logger.Warn("container failed to start", "container", c.Name, "err", err)
		w.a.recorder.Eventf(w.pod, corev1.EventTypeWarning, "Failed", "Error: failed to start container %q: %v", c.Name, err)
		now := metav1.Now()
		w.mu.Lock()
		st := states[c.Name]
		st.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode: 128, Reason: "StartError", Message: err.Error(), StartedAt: now, FinishedAt: now}}
		states[c.Name] = st
		w.mu.Unlock()
		return nil
	}
	if s.err != nil {
		return fail(s.err)
	}
	logPath := filepath.Join(w.a.opts.root, "logs", w.ns+"_"+w.name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fail(err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		logFile.Close()
		return fail(err)
	}
	cmd := &exec.Cmd{
		Path: s.path, Args: s.argv, Env: s.env, Dir: s.dir,
		Stdout: pw, Stderr: pw,
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL},
	}
	w.mu.Lock()
	if w.deleting() {
		w.mu.Unlock()
		pr.Close()
		pw.Close()
		logFile.Close()
		return nil
	}
	err = cmd.Start()
	pw.Close()
	if err != nil {
		w.mu.Unlock()
		pr.Close()
		logFile.Close()
		return fail(err)
	}
	p := &proc{cmd: cmd, pgid: cmd.Process.Pid, tail: &tailBuffer{}, copied: make(chan struct{})}
	w.procs[c.Name] = p
	now := metav1.Now()
	st := states[c.Name]
	st.ContainerID = fmt.Sprintf("podagent://%s-%s", w.uid, c.Name)
	st.Started = ptr.To(true)
	st.Ready = !init
	st.State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}
	states[c.Name] = st
	w.mu.Unlock()
	go func() {
		defer close(p.copied)
		defer logFile.Close()
		defer pr.Close()
		_, _ = io.Copy(io.MultiWriter(logFile, p.tail), pr)
	}()
	_ = os.WriteFile(filepath.Join(w.dir, (map[bool]string{true: "init-", false: ""})[init]+c.Name+".pid"), []byte(fmt.Sprint(p.pgid)), 0o644)
	w.logger.Info("container started", "container", c.Name, "pid", p.pgid, "log", logPath)
	w.a.recorder.Eventf(w.pod, corev1.EventTypeNormal, "Started", "Started container %s (pid %d)", c.Name, p.pgid)
	return p
}

// wait reaps a container's process, kills what is left of its process group, and records the
// terminated state with the termination message.
func (w *podWorker) wait(c *corev1.Container, p *proc, s *execSpec, init bool) {
	err := p.cmd.Wait()
	_ = syscall.Kill(-p.pgid, syscall.SIGKILL) // the container is gone: so is everything it started
	select {
	case <-p.copied:
	case <-time.After(2 * time.Second):
	}
	code := int32(0)
	if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); ok {
		switch {
		case ws.Signaled():
			code = 128 + int32(ws.Signal())
		case ws.Exited():
			code = int32(ws.ExitStatus())
		}
	} else if err != nil {
		code = 1
	}
	reason := "Completed"
	if code != 0 {
		reason = "Error"
	}
	msg := readTail(s.termFile, maxTermMsg)
	if msg == "" && code != 0 && c.TerminationMessagePolicy == corev1.TerminationMessageFallbackToLogsOnError {
		msg = p.tail.lastLines(maxLogMsgLines, maxLogMsgBytes)
	}
	states := w.status
	if init {
		states = w.initStatus
	}
	w.mu.Lock()
	st := states[c.Name]
	var started metav1.Time
	if st.State.Running != nil {
		started = st.State.Running.StartedAt
	}
	st.Ready = false
	st.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
		ExitCode: code, Reason: reason, Message: msg, StartedAt: started, FinishedAt: metav1.Now(),
		ContainerID: st.ContainerID,
	}}
	if code > 128 {
		st.State.Terminated.Signal = code - 128
	}
	states[c.Name] = st
	w.mu.Unlock()
	w.logger.Info("container exited", "container", c.Name, "exitCode", code, "messageBytes", len(msg))
}

// readTail returns the last max bytes of a file ("" if missing), like the kubelet.
func readTail(p string, max int64) string {
	f, err := os.Open(p)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	off := st.Size() - max
	if off < 0 {
		off = 0
	}
	b, _ := io.ReadAll(io.NewSectionReader(f, off, st.Size()-off))
	return string(b)
}

// tailBuffer keeps the last bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 4*maxLogMsgBytes {
		t.buf = append([]byte{}, t.buf[len(t.buf)-maxLogMsgBytes:]...)
	}
	return len(p), nil
}

// lastLines returns at most n lines and max bytes from the end.
func (t *tailBuffer) lastLines(n, max int) string {
	t.mu.Lock()
	b := append([]byte{}, t.buf...)
	t.mu.Unlock()
	if len(b) > max {
		b = b[len(b)-max:]
	}
	s := string(b)
	lines := strings.SplitAfter(s, "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "")
}

// push posts the worker's view of the pod status (read-modify-write on the latest pod, so
// conditions set by others such as PodScheduled or DisruptionTarget are kept).
func (w *podWorker) push() {
	w.pushMu.Lock()
	defer w.pushMu.Unlock()
	if w.gone.Load() {
		return
	}
	ctx := context.Background()
	pods := w.a.cs.CoreV1().Pods(w.ns)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := pods.Get(ctx, w.name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cur.UID != w.uid {
			return apierrors.NewNotFound(corev1.Resource("pods"), w.name)
		}
		if cur.Status.Phase == corev1.PodSucceeded || cur.Status.Phase == corev1.PodFailed {
			return nil // terminal phases are final
		}
		w.render(&cur.Status)
		_, err = pods.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if apierrors.IsNotFound(err) {
		w.gone.Store(true)
		w.logger.Info("pod is gone from the API")
		go w.requestDelete(0)
		return
	}
	if err != nil {
		w.logger.Error("status update failed", "err", err)
	}
}

func setCondition(st *corev1.PodStatus, t corev1.PodConditionType, ok bool, reason string) {
	status := corev1.ConditionFalse
	if ok {
		status, reason = corev1.ConditionTrue, ""
	}
	now := metav1.Now()
	for i := range st.Conditions {
		c := &st.Conditions[i]
		if c.Type != t {
			continue
		}
		if c.Status != status {
			c.LastTransitionTime = now
		}
		c.Status, c.Reason, c.Message = status, reason, ""
		return
	}
	st.Conditions = append(st.Conditions, corev1.PodCondition{Type: t, Status: status, Reason: reason, LastTransitionTime: now})
}

// render writes the worker state into a pod status.
func (w *podWorker) render(st *corev1.PodStatus) {
	w.mu.Lock()
	defer w.mu.Unlock()
	st.Phase, st.Reason, st.Message = w.phase, w.reason, w.msg
	st.HostIP = w.a.hostIP
	st.HostIPs = []corev1.HostIP{{IP: w.a.hostIP}}
	st.PodIP = w.a.hostIP
	st.PodIPs = []corev1.PodIP{{IP: w.a.hostIP}}
	st.StartTime = &w.startTime
	st.InitContainerStatuses = nil
	for _, c := range w.pod.Spec.InitContainers {
		st.InitContainerStatuses = append(st.InitContainerStatuses, w.initStatus[c.Name])
	}
	st.ContainerStatuses = nil
	allReady := true
	for _, c := range w.pod.Spec.Containers {
		cs := w.status[c.Name]
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
		if !cs.Ready {
			allReady = false
		}
	}
	terminal := w.phase == corev1.PodSucceeded || w.phase == corev1.PodFailed
	notReady := "ContainersNotReady"
	if terminal {
		notReady = "PodCompleted"
	}
	hasScheduled := false
	for _, c := range st.Conditions {
		hasScheduled = hasScheduled || c.Type == corev1.PodScheduled
	}
	if !hasScheduled {
		setCondition(st, corev1.PodScheduled, true, "")
	}
	setCondition(st, corev1.PodReadyToStartContainers, w.sandbox && !terminal, "")
	initReason := "ContainersNotInitialized"
	if terminal && !w.initialized {
		initReason = "PodCompleted"
	}
	setCondition(st, corev1.PodInitialized, w.initialized || len(w.pod.Spec.InitContainers) == 0, initReason)
	setCondition(st, corev1.ContainersReady, allReady && !terminal, notReady)
	setCondition(st, corev1.PodReady, allReady && !terminal, notReady)
}
