//go:build e2e

package e2e

// Helpers of TestAlignmentRunEndToEnd (alignment_test.go): tools (kubectl, helm), the binaries the
// pods and the host-side manager run, the manager process, the scaled-down quickstart manifest, a
// tiny random model for builds without the built-in one, and run waits.
//
// Environment (besides doc.go's): E2E_BIN_DIR (prebuilt bpo and manager; default: built into
// E2E_DIR/build), E2E_MODEL (builtin, tiny or auto: builtin when trainer/task/models/tiny-reviews
// has config.json and model.safetensors), HELM (default: hack/tools.sh helm). hack/e2e.sh sets
// all three.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	alignv1 "github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/pipeline"
	"github.com/bpo-dev/bpo/trainer/model"
)

const (
	releaseNamespace = "bpo-system"
	releaseName      = "bpo"
	chartFullname    = "bpo-operator" // the chart's fullname for release "bpo" (ServiceAccount, Deployment)
	leaseName        = "alignment.bpo.dev"
	workspaceClaim   = "bpo-workspace" // config/samples/workspace_pvc.yaml
	tinyModelPath    = "models/tiny"   // spec.model.path of the tiny model, relative to the volume root the pods see
	builtinModel     = "tiny-reviews"
)

// ak is the state of the alignment test: tools, binaries and the manager process.
var ak struct {
	kubectl    string
	helm       string
	bpo        string // the bpo binary the pods run (a copy in the agent's --bin-dir)
	manager    string // the manager binary (a copy in the agent's --bin-dir, run on the host)
	crc        client.Client
	managerCmd *exec.Cmd
	managerLog string
	model      string // "builtin" or "tiny"
}

// ------------------------------------------------------------------ tools and binaries

// k8sBinDir is the folder of the control-plane binaries (and kubectl) the cluster runs.
func k8sBinDir() (string, error) {
	if d := os.Getenv("K8S_BIN_DIR"); d != "" {
		return d, nil
	}
	b, err := os.ReadFile(filepath.Join(env.dir, "env")) // written by hack/e2e-cluster.sh up
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "export K8S_BIN_DIR="); ok {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("%s has no K8S_BIN_DIR", filepath.Join(env.dir, "env"))
}

func setupTools(t *testing.T) {
	t.Helper()
	dir, err := k8sBinDir()
	if err != nil {
		t.Fatalf("kubectl: %v", err)
	}
	ak.kubectl = filepath.Join(dir, "kubectl")
	if ak.helm = os.Getenv("HELM"); ak.helm == "" {
		out, err := runCmd(exec.Command(filepath.Join(env.root, "hack/tools.sh"), "helm"), false)
		if err != nil {
			t.Fatalf("hack/tools.sh helm: %v", err)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		ak.helm = lines[len(lines)-1]
	}
	for _, p := range []string{ak.kubectl, ak.helm} {
		if !isExec(p) {
			t.Fatalf("%s is not an executable", p)
		}
	}
}

func isExec(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// prepareBinaries puts bpo and manager into the agent's --bin-dir (pods run them by base name;
// the host-side manager runs from there too). They are copied, not linked, so that a rebuild of
// bin/ during the test changes nothing under it.
// E2E_BIN_DIR (set by hack/e2e.sh to the clone's bin/) names prebuilt binaries; without it they
// are built here.
func prepareBinaries(t *testing.T) {
	t.Helper()
	src := os.Getenv("E2E_BIN_DIR")
	if src == "" {
		src = filepath.Join(env.dir, "build")
		t0 := time.Now()
		c := exec.Command("go", "build", "-o", src+"/", "./cmd/bpo", "./cmd/manager")
		c.Dir = env.root
		if _, err := runCmd(c, true); err != nil {
			t.Fatalf("go build: %v", err)
		}
		record(t, "go build bpo, manager", time.Since(t0))
	}
	// The judge service's binary (test/e2e/judgeserver), whatever E2E_BIN_DIR holds.
	c := exec.Command("go", "build", "-o", filepath.Join(env.podBin, "judgeserver"), "./test/e2e/judgeserver")
	c.Dir = env.root
	if _, err := runCmd(c, true); err != nil {
		t.Fatalf("go build judgeserver: %v", err)
	}
	ak.bpo = filepath.Join(env.podBin, "bpo")
	ak.manager = filepath.Join(env.podBin, "manager")
	for from, to := range map[string]string{filepath.Join(src, "bpo"): ak.bpo, filepath.Join(src, "manager"): ak.manager} {
		if err := copyFile(from, to); err != nil {
			t.Fatalf("copy %s: %v", from, err)
		}
	}
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		return err
	}
	tmp := to + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, to)
}

// modelMode is E2E_MODEL (builtin or tiny); empty or "auto": builtin when the built-in model's
// files are in the tree (they are embedded into bpo when it is built), else tiny.
func modelMode(t *testing.T) string {
	switch m := os.Getenv("E2E_MODEL"); m {
	case "builtin", "tiny":
		return m
	case "", "auto":
		dir := filepath.Join(env.root, "trainer/task/models", builtinModel)
		for _, f := range []string{"config.json", "model.safetensors"} {
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				return "tiny"
			}
		}
		return "builtin"
	default:
		t.Fatalf("E2E_MODEL=%q: want builtin, tiny or auto", m)
		return ""
	}
}

// kubectlFlags: the cluster, and a discovery cache in E2E_DIR instead of ~/.kube/cache.
func kubectlFlags() []string {
	return []string{"--kubeconfig", filepath.Join(env.dir, "kubeconfig"), "--cache-dir", filepath.Join(env.dir, "kubectl-cache")}
}

// kubectl runs kubectl against the e2e cluster and returns its stdout.
func kubectl(ctx context.Context, t *testing.T, args ...string) (string, error) {
	c := exec.CommandContext(ctx, ak.kubectl, append(kubectlFlags(), args...)...)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	t0 := time.Now()
	err := c.Run()
	if t != nil {
		t.Logf("$ kubectl %s (%.1fs)\n%s%s", strings.Join(args, " "), time.Since(t0).Seconds(), out.String(), errb.String())
	}
	if err != nil {
		return out.String(), fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

func mustKubectl(ctx context.Context, t *testing.T, args ...string) string {
	t.Helper()
	out, err := kubectl(ctx, t, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func newRuntimeClient() (client.Client, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(env.dir, "kubeconfig"))
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 50, 100
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := alignv1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	return client.New(cfg, client.Options{Scheme: scheme})
}

// ------------------------------------------------------------------ the manager

// freePort picks a free loopback port below the kernel's ephemeral range: a port from ":0" is an
// ephemeral one, and the manager's own outgoing connections could take it before it binds.
func freePort() (int, error) {
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			if v, err := strconv.Atoi(f[0]); err == nil && v > 11000 {
				lo = v
			}
		}
	}
	var lastErr error
	for range 200 {
		p := 10000 + rand.IntN(lo-10000)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			lastErr = err
			continue
		}
		l.Close()
		return p, nil
	}
	return 0, fmt.Errorf("no free port below %d: %w", lo, lastErr)
}

// managerKubeconfig writes a kubeconfig for the chart's ServiceAccount (a TokenRequest token),
// so that the host-side manager runs with exactly the RBAC the chart grants.
func managerKubeconfig(ctx context.Context) (string, error) {
	tr, err := env.cs.CoreV1().ServiceAccounts(releaseNamespace).CreateToken(ctx, chartFullname, &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](7200)}}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token for ServiceAccount %s/%s: %w", releaseNamespace, chartFullname, err)
	}
	cfg, err := clientcmd.LoadFromFile(filepath.Join(env.dir, "kubeconfig"))
	if err != nil {
		return "", err
	}
	ctxName := cfg.CurrentContext
	user := "system:serviceaccount:" + releaseNamespace + ":" + chartFullname
	for k := range cfg.AuthInfos {
		delete(cfg.AuthInfos, k)
	}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	cfg.Contexts[ctxName].AuthInfo = user
	cfg.Contexts[ctxName].Namespace = releaseNamespace
	p := filepath.Join(env.dir, "manager.kubeconfig")
	return p, clientcmd.WriteToFile(*cfg, p)
}

// startManager runs bin/manager on the host with the args of the chart's (scaled-to-zero)
// Deployment, then the kubeconfig of the chart's ServiceAccount and free loopback ports.
func startManager(ctx context.Context, t *testing.T) {
	t.Helper()
	dep, err := env.cs.AppsV1().Deployments(releaseNamespace).Get(ctx, chartFullname, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the chart's Deployment: %v", err)
	}
	args := append([]string{}, dep.Spec.Template.Spec.Containers[0].Args...)
	kc, err := managerKubeconfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mp, err1 := freePort()
	hp, err2 := freePort()
	pp, err3 := freePort()
	if err := errors.Join(err1, err2, err3); err != nil {
		t.Fatal(err)
	}
	// later flags win: the chart's own values first, then what a host process needs (the agent
	// runs stage pods as host processes: they reach the progress endpoint on loopback)
	args = append(args, "--kubeconfig="+kc,
		fmt.Sprintf("--metrics-bind-address=127.0.0.1:%d", mp),
		fmt.Sprintf("--health-probe-bind-address=127.0.0.1:%d", hp),
		fmt.Sprintf("--progress-bind-address=127.0.0.1:%d", pp),
		fmt.Sprintf("--progress-url=http://127.0.0.1:%d", pp),
		"--zap-encoder=console")
	ak.managerLog = filepath.Join(env.dir, "logs", "manager.log")
	logf, err := os.OpenFile(ak.managerLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	c := exec.Command(ak.manager, args...)
	c.Stdout, c.Stderr = logf, logf
	c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	t0 := time.Now()
	if err := c.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	t.Logf("manager pid %d: %s %s (log %s)", c.Process.Pid, ak.manager, strings.Join(args, " "), ak.managerLog)
	// a pid file like the cluster's, so `hack/e2e-cluster.sh down` (and its watchdog) stop it too
	_ = os.WriteFile(filepath.Join(env.dir, "run", "manager.pid"), []byte(strconv.Itoa(c.Process.Pid)), 0o644)
	_ = os.WriteFile(filepath.Join(env.dir, "run", "manager.cmd"), []byte(ak.manager), 0o644)
	ak.managerCmd = c
	exited := make(chan struct{})
	go func() { _ = c.Wait(); logf.Close(); close(exited) }()

	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	url := fmt.Sprintf("http://127.0.0.1:%d/readyz", hp)
	err = poll(wctx, 100*time.Millisecond, func() (bool, error) {
		select {
		case <-exited:
			return false, fmt.Errorf("manager exited: %v", c.ProcessState)
		default:
		}
		resp, err := http.Get(url)
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		t.Fatalf("manager not ready: %v\n%s", err, tailFile(ak.managerLog, 30))
	}
	record(t, "(e) manager start -> /readyz ok", time.Since(t0))
	// leader election through the chart's leader-election Role
	var holder string
	err = poll(wctx, 200*time.Millisecond, func() (bool, error) {
		select {
		case <-exited:
			return false, fmt.Errorf("manager exited: %v", c.ProcessState)
		default:
		}
		l, err := env.cs.CoordinationV1().Leases(releaseNamespace).Get(wctx, leaseName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		holder = ptr.Deref(l.Spec.HolderIdentity, "")
		return holder != "", nil
	})
	if err != nil {
		t.Fatalf("manager did not acquire Lease %s/%s: %v\n%s", releaseNamespace, leaseName, err, tailFile(ak.managerLog, 30))
	}
	record(t, "(e) manager start -> leader (Lease held)", time.Since(t0))
	t.Logf("Lease %s/%s held by %s", releaseNamespace, leaseName, holder)
}

func stopManager() {
	c := ak.managerCmd
	if c == nil || c.Process == nil {
		return
	}
	_ = c.Process.Signal(syscall.SIGTERM)
	for i := 0; i < 150 && syscall.Kill(c.Process.Pid, 0) == nil; i++ {
		time.Sleep(100 * time.Millisecond)
	}
	_ = c.Process.Kill()
	ak.managerCmd = nil
	_ = os.Remove(filepath.Join(env.dir, "run", "manager.pid"))
	_ = os.Remove(filepath.Join(env.dir, "run", "manager.cmd"))
}

// managerAlive fails the test when the manager process died.
func managerAlive(t *testing.T) {
	t.Helper()
	if c := ak.managerCmd; c == nil || syscall.Kill(c.Process.Pid, 0) != nil || c.ProcessState != nil {
		t.Fatalf("the manager is not running\n%s", tailFile(ak.managerLog, 40))
	}
}

// ------------------------------------------------------------------ the model and the manifest

// workspaceRoot is where the agent keeps the workspace claim: the volume the pods see is its
// subPath "runs" (config/samples/quickstart.yaml), and each run has a folder in it.
func workspaceRoot() string {
	return filepath.Join(env.agentRoot, "pvc", namespace, workspaceClaim, "runs")
}

// writeTinyModel writes a small random GPT-2 (byte tokenizer) with SFT adapters for members
// members (rank and alpha of the schema defaults) at dir, like pipeline_test.go's newVolume.
func writeTinyModel(dir string, members int) error {
	cfg := model.Config{ModelType: "gpt2", VocabSize: 257, NPositions: 128, NEmbd: 32, NLayer: 2, NHead: 2,
		LayerNormEpsilon: 1e-5, ActivationFunction: "gelu_new", BOSTokenID: 256, EOSTokenID: 256}
	if err := model.SaveWeights(dir, model.Init(cfg, 7)); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), []byte(`{"tokenizer_class": "byte"}`+"\n"), 0o644); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "adapters"), 0o755); err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for m := range members {
		a := model.NewAdapter(cfg, 8, 16, int64(m+1)) // spec.ensemble rank 8, alpha 16 (defaults)
		for name, ten := range a.Tensors {
			if strings.HasSuffix(name, "lora_B") {
				for i := range ten.Data {
					ten.Data[i] = 0.05 * rng.NormFloat64()
				}
			}
		}
		if err := model.SaveAdapter(pipeline.AdapterFile(dir, m), a); err != nil {
			return err
		}
	}
	return nil
}

// setPath sets obj[p0][p1]...= v, creating maps on the way.
func setPath(obj map[string]any, v any, path ...string) {
	m := obj
	for _, p := range path[:len(path)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[p] = next
		}
		m = next
	}
	m[path[len(path)-1]] = v
}

// quickstart returns config/samples/quickstart.yaml scaled down to finish in about a minute,
// renamed, with the model of the test's mode, and with extra changes applied.
func quickstart(t *testing.T, name string, extra func(obj map[string]any)) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(env.root, "config/samples/quickstart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	obj := map[string]any{}
	if err := yaml.Unmarshal(b, &obj); err != nil {
		t.Fatal(err)
	}
	setPath(obj, name, "metadata", "name")
	for _, s := range []struct {
		v    any
		path string
	}{
		{64, "budget.pairs"}, {8, "budget.pairsPerStep"}, {1, "budget.epochsPerPhase"}, {32, "budget.evalPrompts"},
		{qsSamplesPerPrompt, "budget.samplesPerPrompt"},
		{2, "trustRegion.phases"}, {2, "ensemble.members"},
		{2, "sampler.parallelism"}, {1, "labeler.parallelism"},
		{true, "evaluator.everyPhase"}, {1, "evaluator.samplesPerPrompt"},
		// The quickstart's model (small-reviews) is the one a user should see; the e2e runs the
		// whole loop many times, so it takes the small fast one.
		{builtinModel, "model.builtin"}, {32, "sampler.maxNewTokens"},
	} {
		setPath(obj, s.v, append([]string{"spec"}, strings.Split(s.path, ".")...)...)
	}
	if ak.model == "tiny" {
		setPath(obj, map[string]any{"path": tinyModelPath}, "spec", "model")
	}
	if extra != nil {
		extra(obj)
	}
	out, err := yaml.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// applyManifest writes a manifest into E2E_DIR and applies it with kubectl.
func applyManifest(ctx context.Context, t *testing.T, file string, data []byte) {
	t.Helper()
	p := filepath.Join(env.dir, file)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	mustKubectl(ctx, t, "apply", "-n", namespace, "-f", p)
}

// ------------------------------------------------------------------ runs

func getRun(ctx context.Context, name string) (*alignv1.AlignmentRun, error) {
	run := &alignv1.AlignmentRun{}
	return run, ak.crc.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, run)
}

// observeCreation polls for the run every 20 ms from now on and reports when it first exists
// (creationTimestamp has a resolution of one second).
func observeCreation(ctx context.Context, name string) func() time.Time {
	var mu sync.Mutex
	var seen time.Time
	go func() {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		_ = poll(ctx, 20*time.Millisecond, func() (bool, error) {
			if _, err := getRun(ctx, name); err != nil {
				return false, nil
			}
			mu.Lock()
			seen = time.Now()
			mu.Unlock()
			return true, nil
		})
	}()
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return seen
	}
}

func condition(run *alignv1.AlignmentRun, t string) *metav1.Condition {
	return meta.FindStatusCondition(run.Status.Conditions, t)
}

// waitSucceeded runs `kubectl wait --for=condition=Succeeded` and, next to it, watches the run so
// that a Failed run (or a dead manager) ends the wait at once. It logs every stage change.
func waitSucceeded(ctx context.Context, t *testing.T, name string, timeout time.Duration) *alignv1.AlignmentRun {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, timeout+30*time.Second)
	defer cancel()
	args := append(kubectlFlags(), "-n", namespace,
		"wait", "--for=condition=Succeeded", "alignmentrun/"+name, fmt.Sprintf("--timeout=%ds", int(timeout.Seconds())))
	kw := exec.CommandContext(wctx, ak.kubectl, args...)
	var out bytes.Buffer
	kw.Stdout, kw.Stderr = &out, &out
	if err := kw.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- kw.Wait() }()
	stop := func() { _ = kw.Process.Kill(); <-done }
	t0 := time.Now()
	last := ""
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			t.Logf("$ kubectl %s (%.1fs)\n%s", strings.Join(args[len(kubectlFlags()):], " "), time.Since(t0).Seconds(), out.String())
			run, gerr := getRun(ctx, name)
			if err != nil || gerr != nil {
				t.Fatalf("run %s did not succeed: kubectl wait: %v; get: %v; status: %s", name, err, gerr, statusJSON(run))
			}
			return run
		case <-tick.C:
			if c := ak.managerCmd; c == nil || syscall.Kill(c.Process.Pid, 0) != nil {
				stop()
				t.Fatalf("the manager died while waiting for %s\n%s", name, tailFile(ak.managerLog, 40))
			}
			run, err := getRun(ctx, name)
			if err != nil {
				continue
			}
			now := fmt.Sprintf("phase %s stage %s retries %d", run.Status.Progress, run.Status.Stage, run.Status.Retries)
			if c := condition(run, alignv1.ConditionRunning); c != nil {
				now += " | " + c.Message
			}
			if now != last {
				t.Logf("[%5.1fs] %s: %s", time.Since(t0).Seconds(), name, now)
				last = now
			}
			if c := condition(run, alignv1.ConditionFailed); c != nil && c.Status == metav1.ConditionTrue {
				stop()
				t.Fatalf("run %s Failed: %s: %s\nstatus: %s", name, c.Reason, c.Message, statusJSON(run))
			}
		}
	}
}

func statusJSON(run *alignv1.AlignmentRun) string {
	if run == nil {
		return "<none>"
	}
	b, _ := json.MarshalIndent(run.Status, "", "  ")
	return string(b)
}
