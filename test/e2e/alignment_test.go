//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	alignv1 "github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/pipeline"
)

// The scaled-down quickstart (see quickstart()): what the assertions expect.
const (
	qsPhases           = 2
	qsPairsPerPhase    = 32 // budget.pairs 64 / 2 phases
	qsSamplesPerPrompt = 2  // the quickstart takes the best and worst of 4; the e2e samples 2
	qsEvalPrompts      = 32
	qsMembers          = 2
	qsSampleShards     = 2
	qsLabelShards      = 1
)

var qsStages = []string{alignv1.StageSample, alignv1.StageLabel, alignv1.StageTrain, alignv1.StageEval}

// qsStep is one stage of one phase of the quickstart's walk.
type qsStep struct {
	phase int
	stage string
}

// qsWalk is the quickstart's walk (evaluator.everyPhase, baseline and report by default),
// written out, not derived from spec.Stages, so that the walk itself is under test: the baseline
// eval of the initial model as phase 0, every stage of phases 1..F, then the report.
func qsWalk() []qsStep {
	walk := []qsStep{{0, alignv1.StageEval}}
	for k := 1; k <= qsPhases; k++ {
		for _, st := range qsStages {
			walk = append(walk, qsStep{k, st})
		}
	}
	return append(walk, qsStep{qsPhases, alignv1.StageReport})
}

func completionsOf(stage string) int {
	switch stage {
	case alignv1.StageSample:
		return qsSampleShards
	case alignv1.StageLabel:
		return qsLabelShards
	case alignv1.StageTrain:
		return qsMembers
	default:
		return 1
	}
}

// TestAlignmentRunEndToEnd installs the chart (manager scaled to zero), runs the manager on the
// host with the chart's args and ServiceAccount, and drives a scaled-down quickstart through all
// stages on the podagent node; then kills a train pod of a second run mid-run and checks the
// stage retry; then deletes both runs and checks that the garbage collector removes their children.
func TestAlignmentRunEndToEnd(t *testing.T) {
	dumpOnFailure(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	tl := &report{}
	defer tl.write(t)
	t.Cleanup(func() {
		if t.Failed() && ak.managerLog != "" {
			t.Logf("---- tail of logs/manager.log:\n%s", tailFile(ak.managerLog, 40))
		}
	})

	// 1. the cluster and the agent are up (TestMain); tools, binaries, clients
	setupTools(t)
	prepareBinaries(t)
	ak.model = modelMode(t)
	var err error
	if ak.crc, err = newRuntimeClient(); err != nil {
		t.Fatal(err)
	}
	tl.add("model: %s (E2E_MODEL=%q)", ak.model, os.Getenv("E2E_MODEL"))
	t.Logf("model %s; bpo %s; manager %s; kubectl %s; helm %s", ak.model, ak.bpo, ak.manager, ak.kubectl, ak.helm)

	// 2. the chart, with the manager Deployment at zero replicas; the manager on the host
	installChart(ctx, t, tl)
	startManager(ctx, t)
	defer stopManager()

	// 3. the workspace claim (and the tiny model in it when the built-in one is not built)
	prepareWorkspace(ctx, t, tl)

	var first *alignv1.AlignmentRun
	if !t.Run("quickstart", func(t *testing.T) { first = quickstartRun(ctx, t, tl) }) {
		return
	}
	t.Run("kill-train-pod", func(t *testing.T) { killRun(ctx, t, tl, first) })
	t.Run("stuck-then-fixed", func(t *testing.T) { stuckRun(ctx, t, tl) })
	t.Run("delete", func(t *testing.T) {
		for _, name := range []string{"quickstart", "quickstart-kill", "quickstart-data"} {
			deleteRun(ctx, t, tl, name)
		}
	})
	managerAlive(t)
}

// ------------------------------------------------------------------ steps

func installChart(ctx context.Context, t *testing.T, tl *report) {
	t.Helper()
	t0 := time.Now()
	c := exec.CommandContext(ctx, ak.helm, "install", releaseName, filepath.Join(env.root, "charts/bpo-operator"),
		"--namespace", releaseNamespace, "--create-namespace",
		"--kubeconfig", filepath.Join(env.dir, "kubeconfig"),
		"--set", "replicaCount=0") // in-cluster config cannot work through the agent: the manager runs on the host
	h := filepath.Join(env.dir, "helm")
	c.Env = append(os.Environ(), "HELM_CACHE_HOME="+h+"/cache", "HELM_CONFIG_HOME="+h+"/config", "HELM_DATA_HOME="+h+"/data")
	out, err := c.CombinedOutput()
	t.Logf("$ helm install %s charts/bpo-operator -n %s --create-namespace --set replicaCount=0\n%s", releaseName, releaseNamespace, out)
	if err != nil {
		t.Fatalf("helm install: %v", err)
	}
	mustKubectl(ctx, t, "wait", "--for=condition=Established", "crd/alignmentruns.alignment.bpo.dev", "--timeout=60s")
	d := time.Since(t0)
	record(t, "(e) helm install + CRD Established", d)
	tl.add("helm install (replicaCount=0) + CRD Established  %6.1fs", d.Seconds())

	dep, err := env.cs.AppsV1().Deployments(releaseNamespace).Get(ctx, chartFullname, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r := ptr.Deref(dep.Spec.Replicas, -1); r != 0 {
		t.Fatalf("Deployment %s has %d replicas, want 0", dep.Name, r)
	}
	pods, err := env.cs.CoreV1().Pods(releaseNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 0 {
		t.Errorf("%d pods in %s, want none (manager scaled to zero)", len(pods.Items), releaseNamespace)
	}
}

func prepareWorkspace(ctx context.Context, t *testing.T, tl *report) {
	t.Helper()
	t0 := time.Now()
	mustKubectl(ctx, t, "apply", "-n", namespace, "-f", filepath.Join(env.root, "config/samples/workspace_pvc.yaml"))
	err := poll(ctx, 100*time.Millisecond, func() (bool, error) {
		c, err := env.cs.CoreV1().PersistentVolumeClaims(namespace).Get(ctx, workspaceClaim, metav1.GetOptions{})
		return err == nil && c.Status.Phase == corev1.ClaimBound, err
	})
	if err != nil {
		t.Fatalf("claim %s not Bound: %v", workspaceClaim, err)
	}
	tl.add("workspace claim Bound                           %6.1fs", time.Since(t0).Seconds())
	if ak.model == "tiny" {
		dir := filepath.Join(workspaceRoot(), tinyModelPath)
		if err := writeTinyModel(dir, qsMembers); err != nil {
			t.Fatalf("tiny model: %v", err)
		}
		t.Logf("tiny random model written to %s (spec.model.path %s)", dir, tinyModelPath)
	}
}

// quickstartRun: step 3-5 of the test.
func quickstartRun(ctx context.Context, t *testing.T, tl *report) *alignv1.AlignmentRun {
	const name = "quickstart"
	pods := watchPods(t, alignv1.LabelRun+"="+name)
	manifest := quickstart(t, name, nil)
	t.Logf("manifest:\n%s", manifest)
	created := observeCreation(ctx, name)
	t0 := time.Now()
	applyManifest(ctx, t, "quickstart-e2e.yaml", manifest)
	run := waitSucceeded(ctx, t, name, 10*time.Minute)
	total := time.Since(t0)
	record(t, "(e) quickstart created -> first pod created", max(pods.firstCreated().Sub(created()), 0))
	if r, ok := pods.firstRunning(); ok {
		record(t, "(e) quickstart created -> first pod Running", max(r.Sub(created()), 0))
	}
	record(t, "(e) quickstart kubectl apply -> Succeeded", total)

	checkRunStatus(t, run)
	jobs := checkJobs(ctx, t, run, nil)
	checkWorkspace(t, run)
	checkEvents(ctx, t, run, "StageSucceeded", len(qsWalk()))
	tl.runTimeline(t, run, t0, created(), total, pods, jobs)
	return run
}

// stuckRun: a run that reads its prompts from a ConfigMap (under custom key names) which does
// not exist yet. Its first stage pod cannot start (the agent, like a kubelet, reports
// CreateContainerConfigError and retries), the run says so in its Running condition
// (StagePodsPending) and in a Warning event; once the ConfigMap is created the same pod
// starts and the run succeeds. Its labeler is an OpenAI-compatible judge deployed in the
// cluster: a Deployment of test/e2e/judgeserver (a rule-based judge) behind a token from a
// Secret. The agent runs pods as host processes without pod networking, so the judge listens on
// a loopback port the run's url names; the label pods reach it with BPO_ANNOTATOR_TOKEN, and the
// run's status carries what they spent.
func stuckRun(ctx context.Context, t *testing.T, tl *report) {
	const name, cmName, judgeSecret, judgeToken = "quickstart-data", "quickstart-data-prompts", "quickstart-data-judge", "e2e-judge-token-1234"
	judgeAddr := deployJudge(ctx, t, judgeSecret, judgeToken)
	applyManifest(ctx, t, name+".yaml", quickstart(t, name, func(obj map[string]any) {
		setPath(obj, map[string]any{"configMap": map[string]any{
			"name": cmName, "promptsKey": "train-prompts.jsonl", "evalKey": "held-out.jsonl"}}, "spec", "data")
		setPath(obj, map[string]any{"kind": "OpenAIJudge", "url": "http://" + judgeAddr + "/v1", "model": "rule", "allowInsecureHTTP": true,
			"secretRef": map[string]any{"name": judgeSecret, "key": "token"}}, "spec", "labeler", "annotator")
	}))
	t0 := time.Now()
	var msg string
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	err := poll(wctx, 200*time.Millisecond, func() (bool, error) {
		run, err := getRun(wctx, name)
		if err != nil {
			return false, client.IgnoreNotFound(err)
		}
		if c := meta.FindStatusCondition(run.Status.Conditions, alignv1.ConditionRunning); c != nil && c.Reason == alignv1.ReasonStagePodsPending {
			msg = c.Message
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("the run never reported its stuck pod (Running reason %s): %v", alignv1.ReasonStagePodsPending, err)
	}
	stuck := time.Since(t0)
	record(t, "(h) data ConfigMap missing -> Running=StagePodsPending", stuck)
	// The first stage is the baseline's evaluation, which reads the held-out prompts from the
	// missing ConfigMap.
	for _, want := range []string{"phase 0/2 stage eval", "CreateContainerConfigError", cmName} {
		if !strings.Contains(msg, want) {
			t.Errorf("Running message %q lacks %q", msg, want)
		}
	}
	if run, err := getRun(ctx, name); err == nil {
		checkEvents(ctx, t, run, alignv1.ReasonStagePodsPending, 1)
	}

	// The fix: the ConfigMap, from the vendored task files, under the keys the spec names.
	data := map[string]string{}
	for key, file := range map[string]string{"train-prompts.jsonl": "prompts.jsonl", "held-out.jsonl": "eval.jsonl"} {
		b, err := os.ReadFile(filepath.Join(env.root, "trainer/task/reviews/data", file))
		if err != nil {
			t.Fatal(err)
		}
		data[key] = string(b)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: cmName, Namespace: namespace}, Data: data}
	if _, err := env.cs.CoreV1().ConfigMaps(namespace).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t1 := time.Now()
	run := waitSucceeded(ctx, t, name, 10*time.Minute)
	record(t, "(h) ConfigMap created -> Succeeded", time.Since(t1))
	if n := len(run.Status.PhaseResults); n != qsPhases+1 {
		t.Errorf("%d phase results, want %d (the baseline and %d phases)", n, qsPhases+1, qsPhases)
	}
	for _, pr := range run.Status.PhaseResults {
		if pr.Phase == 0 {
			continue // the baseline labels nothing
		}
		a := pr.Annotation
		if a == nil || a.Requests < 2*a.Pairs || a.Pairs != pr.PairsKept+pr.Ties || a.PositionFlips != 0 {
			t.Errorf("phase %d: judge accounting %+v for %d pairs kept and %d ties", pr.Phase, a, pr.PairsKept, pr.Ties)
		}
	}
	var requests int64
	for _, pr := range run.Status.PhaseResults {
		if pr.Annotation != nil {
			requests += pr.Annotation.Requests
		}
	}
	if b, _ := json.Marshal(run.Status); strings.Contains(string(b), judgeToken) {
		t.Error("the judge's token is in the run's status")
	}
	tl.add("judge labeller (a Deployment): %d requests over %d phases", requests, len(run.Status.PhaseResults))
	tl.add("stuck pod: ConfigMap missing -> StagePodsPending %.1fs; created -> Succeeded %.1fs", stuck.Seconds(), time.Since(t1).Seconds())
}

// deployJudge creates the judge's Secret and a Deployment of test/e2e/judgeserver listening on a
// free loopback port, waits until it answers, and returns its address.
func deployJudge(ctx context.Context, t *testing.T, secret, token string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: secret, Namespace: namespace}, StringData: map[string]string{"token": token}}
	if _, err := env.cs.CoreV1().Secrets(namespace).Create(ctx, s, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	manifest := fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: judge
spec:
  replicas: 1
  selector: {matchLabels: {app: judge}}
  template:
    metadata: {labels: {app: judge}}
    spec:
      containers:
      - name: judge
        image: judgeserver:e2e
        command: [judgeserver, --addr, %q]
        env:
        - name: JUDGE_TOKEN
          valueFrom: {secretKeyRef: {name: %s, key: token}}
`, addr, secret)
	applyManifest(ctx, t, "judge.yaml", []byte(manifest))
	t0 := time.Now()
	wctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if err := poll(wctx, 200*time.Millisecond, func() (bool, error) {
		resp, err := http.Post("http://"+addr+"/v1/chat/completions", "application/json", strings.NewReader("{}"))
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusUnauthorized, nil // up, and asking for the token
	}); err != nil {
		t.Fatalf("the judge Deployment never answered on %s: %v", addr, err)
	}
	record(t, "(h) judge Deployment applied -> answering", time.Since(t0))
	return addr
}

// killRun: step 6. A second run whose train stage is slowed down (more epochs, computed from
// the first run's train time) so that a phase-1 train pod can be deleted while it trains.
func killRun(ctx context.Context, t *testing.T, tl *report, first *alignv1.AlignmentRun) {
	const name = "quickstart-kill"
	epochs := killEpochs(ctx, t, first)
	manifest := quickstart(t, name, func(obj map[string]any) { setPath(obj, epochs, "spec", "budget", "epochsPerPhase") })
	pods := watchPods(t, alignv1.LabelRun+"="+name)
	created := observeCreation(ctx, name)
	t0 := time.Now()
	progress := watchProgress(ctx, name)
	applyManifest(ctx, t, "quickstart-kill-e2e.yaml", manifest)

	trainJob := name + "-p1-train"
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	victim := waitRunningPod(wctx, t, trainJob)
	time.Sleep(500 * time.Millisecond) // mid-training, not at start-up
	if p, err := env.cs.CoreV1().Pods(namespace).Get(ctx, victim.Name, metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	} else if p.Status.Phase != corev1.PodRunning {
		t.Fatalf("train pod %s is %s half a second after it started (train too fast for epochsPerPhase %d?)", victim.Name, p.Status.Phase, epochs)
	}
	tDel := time.Now()
	mustKubectl(ctx, t, "delete", "pod", "-n", namespace, victim.Name, "--wait=false")
	t.Logf("deleted pod %s (index %s) %.1fs after apply", victim.Name, victim.Annotations[batchv1.JobCompletionIndexAnnotation], tDel.Sub(t0).Seconds())

	var failedAt, retryAt time.Duration
	err := poll(wctx, 100*time.Millisecond, func() (bool, error) {
		if failedAt == 0 {
			j, err := env.cs.BatchV1().Jobs(namespace).Get(wctx, trainJob, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			if jobCondition(j, batchv1.JobComplete) {
				return false, fmt.Errorf("job %s completed although its pod %s was deleted while running", trainJob, victim.Name)
			}
			if jobCondition(j, batchv1.JobFailed) {
				failedAt = time.Since(tDel)
			}
		}
		if retryAt == 0 {
			_, err := env.cs.BatchV1().Jobs(namespace).Get(wctx, trainJob+"-a1", metav1.GetOptions{})
			if err == nil {
				retryAt = time.Since(tDel)
			} else if !apierrors.IsNotFound(err) {
				return false, err
			}
		}
		return failedAt > 0 && retryAt > 0, nil
	})
	if err != nil {
		t.Fatalf("after deleting %s: Job %s Failed after %v, %s-a1 created after %v: %v", victim.Name, trainJob, failedAt, trainJob, retryAt, err)
	}
	record(t, "(f) train pod delete -> Job Failed", failedAt)
	record(t, "(f) train pod delete -> attempt -a1 Job created", retryAt)

	run := waitSucceeded(ctx, t, name, 10*time.Minute)
	total := time.Since(t0)
	record(t, "(f) kill run apply -> Succeeded (with one retry)", total)

	// the killed pod never succeeded
	if p, err := env.cs.CoreV1().Pods(namespace).Get(ctx, victim.Name, metav1.GetOptions{}); err == nil && p.UID == victim.UID {
		if p.Status.Phase != corev1.PodFailed {
			t.Errorf("deleted pod %s is %s, want Failed", p.Name, p.Status.Phase)
		}
	} else if err != nil && !apierrors.IsNotFound(err) {
		t.Error(err)
	}
	checkRunStatus(t, run)
	// Phase 2's train stage runs epochsPerPhase passes undisturbed: its progress moves in status.
	progress.checkProgressMoved(t, run, qsPhases)
	jobs := checkJobs(ctx, t, run, map[string]bool{"1/train": true})
	checkWorkspace(t, run)
	checkEvents(ctx, t, run, "StageRetry", 1)
	tl.add("")
	tl.add("kill test: train epochsPerPhase %d; deleted %s at +%.1fs; Job Failed +%.1fs later, -a1 created +%.1fs later",
		epochs, victim.Name, tDel.Sub(t0).Seconds(), failedAt.Seconds(), retryAt.Seconds())
	tl.runTimeline(t, run, t0, created(), total, pods, jobs)
}

// killEpochs is epochsPerPhase for the kill run, so that a train pod trains for well over the
// time it takes to see it Running and delete it: about 15 s of the first run's train time per
// epoch. That is the fastest train pod of the first run (both phases, one epoch each): the first
// one is often slower (cold page cache, other jobs on the machine), and a duration that includes
// start-up overestimates an epoch, so this errs towards more epochs.
func killEpochs(ctx context.Context, t *testing.T, first *alignv1.AlignmentRun) int {
	d := math.Inf(1)
	for k := 1; k <= qsPhases; k++ {
		for _, r := range stageResults(ctx, t, fmt.Sprintf("%s-p%d-train", first.Name, k)) {
			d = min(d, r.DurationSeconds)
		}
	}
	if math.IsInf(d, 1) {
		t.Fatalf("no train StageResults of %s", first.Name)
	}
	e := min(max(int(math.Ceil(15/max(d, 0.05))), 2), 100)
	t.Logf("fastest train pod of %s took %.2fs (1 epoch): the kill run uses epochsPerPhase %d", first.Name, d, e)
	return e
}

// deleteRun: step 7. Deleting the run removes its Jobs, pods and spec ConfigMap (owner
// references; kube-controller-manager's garbage collector); the workspace stays.
func deleteRun(ctx context.Context, t *testing.T, tl *report, name string) {
	run, err := getRun(ctx, name)
	if apierrors.IsNotFound(err) {
		t.Skipf("run %s does not exist", name)
	}
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	mustKubectl(ctx, t, "delete", "alignmentrun", name, "-n", namespace, "--timeout=60s")
	sel := metav1.ListOptions{LabelSelector: alignv1.LabelRun + "=" + name}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var left string
	err = poll(wctx, 200*time.Millisecond, func() (bool, error) {
		jobs, err := env.cs.BatchV1().Jobs(namespace).List(wctx, sel)
		if err != nil {
			return false, err
		}
		pods, err := env.cs.CoreV1().Pods(namespace).List(wctx, sel)
		if err != nil {
			return false, err
		}
		_, err = env.cs.CoreV1().ConfigMaps(namespace).Get(wctx, name+"-spec", metav1.GetOptions{})
		cm := err == nil
		if err != nil && !apierrors.IsNotFound(err) {
			return false, err
		}
		left = fmt.Sprintf("%d jobs, %d pods, configmap %v", len(jobs.Items), len(pods.Items), cm)
		return len(jobs.Items) == 0 && len(pods.Items) == 0 && !cm, nil
	})
	if err != nil {
		t.Fatalf("children of %s still there after deleting it: %s (%v)", name, left, err)
	}
	d := time.Since(t0)
	record(t, fmt.Sprintf("(g) delete %s -> Jobs, pods, ConfigMap gone", name), d)
	tl.add("delete %-20s -> Jobs, pods, spec ConfigMap gone  %6.1fs", name, d.Seconds())
	ws := filepath.Join(workspaceRoot(), name, "owner.json")
	if _, err := os.Stat(ws); err != nil {
		t.Errorf("the workspace of %s (uid %s) should outlive the run: %v", name, run.UID, err)
	}
}

// ------------------------------------------------------------------ assertions

func parseMetric(t *testing.T, what, s string) float64 {
	t.Helper()
	if s == "" {
		t.Errorf("%s is empty", what)
		return math.NaN()
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		t.Errorf("%s = %q is not a finite number", what, s)
		return math.NaN()
	}
	return v
}

// formatMetric is the controller's rendering of a metric in status (%.4g).
func formatMetric(v float64) string { return strconv.FormatFloat(v, 'g', 4, 64) }

func checkRunStatus(t *testing.T, run *alignv1.AlignmentRun) {
	t.Helper()
	st := &run.Status
	want := map[string]metav1.ConditionStatus{
		alignv1.ConditionSucceeded: metav1.ConditionTrue, alignv1.ConditionFailed: metav1.ConditionFalse,
		alignv1.ConditionRunning: metav1.ConditionFalse, alignv1.ConditionSuspended: metav1.ConditionFalse,
	}
	for ct, ws := range want {
		c := condition(run, ct)
		if c == nil || c.Status != ws {
			t.Errorf("condition %s = %+v, want %s", ct, c, ws)
		} else if c.ObservedGeneration != run.Generation {
			t.Errorf("condition %s observedGeneration %d, generation %d", ct, c.ObservedGeneration, run.Generation)
		}
	}
	if st.ObservedGeneration != run.Generation {
		t.Errorf("status.observedGeneration %d != metadata.generation %d", st.ObservedGeneration, run.Generation)
	}
	if st.Phases != qsPhases || st.Phase != qsPhases || st.Progress != fmt.Sprintf("%d/%d", qsPhases, qsPhases) {
		t.Errorf("phases %d phase %d progress %q, want %d, %d, %d/%d", st.Phases, st.Phase, st.Progress, qsPhases, qsPhases, qsPhases, qsPhases)
	}
	if st.StartTime == nil || st.CompletionTime == nil || st.CompletionTime.Before(st.StartTime) {
		t.Errorf("startTime %v completionTime %v", st.StartTime, st.CompletionTime)
	}
	if len(st.PhaseResults) != qsPhases+1 {
		t.Fatalf("status.phaseResults has %d entries, want %d (the baseline and %d phases): %s", len(st.PhaseResults), qsPhases+1, qsPhases, statusJSON(run))
	}
	// Phase 0: the initial model's evaluation, the baseline.
	base := st.PhaseResults[0]
	if base.Phase != 0 || !slices.Equal(base.CompletedStages, []string{alignv1.StageEval}) || base.PairsKept != 0 || base.Loss != "" {
		t.Errorf("phaseResults[0] is not the baseline evaluation: %+v", base)
	}
	if v := parseMetric(t, "phaseResults[0].winRate", base.WinRate); v < 0 || v > 1 || st.BaselineWinRate != base.WinRate {
		t.Errorf("baseline win rate %q, status.baselineWinRate %q", base.WinRate, st.BaselineWinRate)
	}
	if want := run.Name + "/report.md"; st.Report != want {
		t.Errorf("status.report %q, want %q", st.Report, want)
	}
	if c := condition(run, alignv1.ConditionSucceeded); c == nil || !strings.Contains(c.Message, "win rate "+st.BaselineWinRate+" -> "+st.LatestWinRate) ||
		!strings.Contains(c.Message, "report "+st.Report) {
		t.Errorf("Succeeded message %+v: want the baseline -> final win rate and the report", c)
	}
	for i, pr := range st.PhaseResults[1:] {
		k := i + 1
		p := fmt.Sprintf("phaseResults[%d] (phase %d)", k, pr.Phase)
		if int(pr.Phase) != k {
			t.Errorf("%s: want phase %d", p, k)
		}
		var wantStages []string
		for _, s := range qsWalk() {
			if s.phase == k {
				wantStages = append(wantStages, s.stage)
			}
		}
		got := slices.Clone(pr.CompletedStages)
		sort.Strings(got)
		sort.Strings(wantStages)
		if !slices.Equal(got, wantStages) {
			t.Errorf("%s: completedStages %v, want %v", p, pr.CompletedStages, wantStages)
		}
		if pr.Samples != qsPairsPerPhase*qsSamplesPerPrompt {
			t.Errorf("%s: samples %d, want %d", p, pr.Samples, qsPairsPerPhase*qsSamplesPerPrompt)
		}
		if pr.PairsSampled <= 0 || pr.PairsSampled+pr.Identical != qsPairsPerPhase {
			t.Errorf("%s: pairsSampled %d + identical %d, want > 0 and sum %d", p, pr.PairsSampled, pr.Identical, qsPairsPerPhase)
		}
		if pr.PairsKept <= 0 || pr.PairsKept+pr.Ties != pr.PairsSampled {
			t.Errorf("%s: pairsKept %d + ties %d, want > 0 and sum pairsSampled %d", p, pr.PairsKept, pr.Ties, pr.PairsSampled)
		}
		parseMetric(t, p+".loss", pr.Loss)
		if v := parseMetric(t, p+".rewardAccuracy", pr.RewardAccuracy); v < 0 || v > 1 {
			t.Errorf("%s: rewardAccuracy %v outside [0,1]", p, v)
		}
		parseMetric(t, p+".rewardMargin", pr.RewardMargin)
		if v := parseMetric(t, p+".klToReference", pr.KLToReference); v < -1e-9 {
			t.Errorf("%s: klToReference %v < 0", p, v)
		}
		parseMetric(t, p+".klToInitial", pr.KLToInitial)
		if v := parseMetric(t, p+".winRate", pr.WinRate); v < 0 || v > 1 {
			t.Errorf("%s: winRate %v outside [0,1]", p, v)
		}
		parseMetric(t, p+".goldReward", pr.GoldReward)
		parseMetric(t, p+".meanLength", pr.MeanLength)
		parseMetric(t, p+".distinct2", pr.Distinct2)
		if want := fmt.Sprintf("%s/phase-%d/members/member-0", run.Name, k); pr.Checkpoint != want {
			t.Errorf("%s: checkpoint %q, want %q", p, pr.Checkpoint, want)
		}
		if pr.StartTime == nil || pr.CompletionTime == nil {
			t.Errorf("%s: startTime %v completionTime %v", p, pr.StartTime, pr.CompletionTime)
		}
	}
	if want := fmt.Sprintf("%s/phase-%d/members/member-0", run.Name, qsPhases); st.LatestCheckpoint != want {
		t.Errorf("status.latestCheckpoint %q, want %q", st.LatestCheckpoint, want)
	}
	if st.LatestWinRate != st.PhaseResults[qsPhases].WinRate {
		t.Errorf("status.latestWinRate %q != phase %d winRate %q", st.LatestWinRate, qsPhases, st.PhaseResults[qsPhases].WinRate)
	}
}

// stageResults reads the StageResults of a Job's succeeded pods by completion index.
func stageResults(ctx context.Context, t *testing.T, job string) map[int]alignv1.StageResult {
	t.Helper()
	pods, err := env.cs.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "batch.kubernetes.io/job-name=" + job})
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]alignv1.StageResult{}
	for _, p := range pods.Items {
		if p.Status.Phase != corev1.PodSucceeded || len(p.Status.ContainerStatuses) == 0 || p.Status.ContainerStatuses[0].State.Terminated == nil {
			continue
		}
		idx, _ := strconv.Atoi(p.Annotations[batchv1.JobCompletionIndexAnnotation])
		var r alignv1.StageResult
		if err := json.Unmarshal([]byte(p.Status.ContainerStatuses[0].State.Terminated.Message), &r); err == nil {
			out[idx] = r
		}
	}
	return out
}

// jobTiming is one stage Job as the timeline shows it.
type jobTiming struct {
	name, stage    string
	phase, attempt int
	created        time.Time
	start, finish  time.Time
	failed         bool
	pods           int
	compute        float64 // max StageResult.durationSeconds over the pods
	computeAllPods float64 // sum over the pods
}

// checkJobs checks every Job of a finished run against the stage contract (names, labels, owner,
// Indexed completions, the bpo command) and that one pod ran per completion (pod list,
// termination messages, the agent's per-pod logs). retried names "<k>/<stage>" that failed once
// (attempt 0 Failed, attempt 1 Complete).
func checkJobs(ctx context.Context, t *testing.T, run *alignv1.AlignmentRun, retried map[string]bool) []jobTiming {
	t.Helper()
	list, err := env.cs.BatchV1().Jobs(namespace).List(ctx, metav1.ListOptions{LabelSelector: alignv1.LabelRun + "=" + run.Name})
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*batchv1.Job{}
	for i := range list.Items {
		byName[list.Items[i].Name] = &list.Items[i]
	}
	var timings []jobTiming
	wantNames := 0
	for _, step := range qsWalk() {
		k, stage := step.phase, step.stage
		{
			attempts := []int{0}
			if retried[fmt.Sprintf("%d/%s", k, stage)] {
				attempts = []int{0, 1}
			}
			for _, a := range attempts {
				wantNames++
				name := fmt.Sprintf("%s-p%d-%s", run.Name, k, stage)
				if a > 0 {
					name += fmt.Sprintf("-a%d", a)
				}
				j := byName[name]
				if j == nil {
					t.Errorf("Job %s does not exist", name)
					continue
				}
				final := a == attempts[len(attempts)-1]
				timings = append(timings, checkJob(ctx, t, run, j, k, stage, a, final))
			}
		}
	}
	if len(list.Items) != wantNames {
		var names []string
		for n := range byName {
			names = append(names, n)
		}
		sort.Strings(names)
		t.Errorf("run %s has %d Jobs, want %d: %v", run.Name, len(list.Items), wantNames, names)
	}
	sort.Slice(timings, func(a, b int) bool { return timings[a].created.Before(timings[b].created) })
	return timings
}

func checkJob(ctx context.Context, t *testing.T, run *alignv1.AlignmentRun, j *batchv1.Job, k int, stage string, attempt int, final bool) jobTiming {
	t.Helper()
	n := completionsOf(stage)
	jt := jobTiming{name: j.Name, stage: stage, phase: k, attempt: attempt, created: j.CreationTimestamp.Time}
	errf := func(format string, args ...any) { t.Errorf("Job %s: "+format, append([]any{j.Name}, args...)...) }

	wantLabels := map[string]string{
		alignv1.LabelRun: run.Name, alignv1.LabelPhase: strconv.Itoa(k),
		alignv1.LabelStage: stage, alignv1.LabelAttempt: strconv.Itoa(attempt),
	}
	for l, v := range wantLabels {
		if j.Labels[l] != v {
			errf("label %s = %q, want %q", l, j.Labels[l], v)
		}
		if j.Spec.Template.Labels[l] != v {
			errf("pod template label %s = %q, want %q", l, j.Spec.Template.Labels[l], v)
		}
	}
	if ref := metav1.GetControllerOf(j); ref == nil || ref.UID != run.UID || ref.Kind != "AlignmentRun" || ref.Name != run.Name {
		errf("controller owner reference %+v, want the AlignmentRun %s (uid %s)", ref, run.Name, run.UID)
	}
	sp := &j.Spec
	if ptr.Deref(sp.CompletionMode, "") != batchv1.IndexedCompletion {
		errf("completionMode %v, want Indexed", ptr.Deref(sp.CompletionMode, ""))
	}
	if c, p := ptr.Deref(sp.Completions, -1), ptr.Deref(sp.Parallelism, -1); int(c) != n || int(p) != n {
		errf("completions %d parallelism %d, want %d", c, p, n)
	}
	if b := ptr.Deref(sp.BackoffLimit, -1); b != 0 {
		errf("backoffLimit %d, want 0", b)
	}
	ps := &sp.Template.Spec
	if len(ps.Containers) != 1 {
		errf("%d containers, want 1", len(ps.Containers))
	} else {
		c := ps.Containers[0]
		wantArgs := []string{stage, "--config", "/etc/bpo/run.yaml", "--workspace", "/workspace", "--phase", strconv.Itoa(k)}
		if stage == alignv1.StageSample || stage == alignv1.StageLabel {
			wantArgs = append(wantArgs, "--shards", strconv.Itoa(n))
		}
		wantArgs = append(wantArgs, "--termination-log", "/dev/termination-log")
		if c.Name != "bpo" || !slices.Equal(c.Command, []string{"bpo"}) || !slices.Equal(c.Args, wantArgs) {
			errf("container %s: %v %v, want bpo: [bpo] %v", c.Name, c.Command, c.Args, wantArgs)
		}
		envs := map[string]string{}
		for _, e := range c.Env {
			envs[e.Name] = e.Value
		}
		if envs["BPO_RUN_NAME"] != run.Name || envs["BPO_RUN_UID"] != string(run.UID) {
			errf("env %v: want BPO_RUN_NAME=%s BPO_RUN_UID=%s", envs, run.Name, run.UID)
		}
		ws := false
		for _, m := range c.VolumeMounts {
			ws = ws || (m.MountPath == "/workspace" && m.SubPath == "runs")
		}
		if !ws {
			errf("no /workspace mount with subPath runs: %+v", c.VolumeMounts)
		}
	}
	if ps.RestartPolicy != corev1.RestartPolicyNever || ptr.Deref(ps.AutomountServiceAccountToken, true) {
		errf("restartPolicy %s automountServiceAccountToken %v", ps.RestartPolicy, ps.AutomountServiceAccountToken)
	}

	if j.Status.StartTime != nil {
		jt.start = j.Status.StartTime.Time
	}
	switch {
	case final:
		if !jobCondition(j, batchv1.JobComplete) || int(j.Status.Succeeded) != n {
			errf("not Complete with %d succeeded: %+v", n, j.Status)
		}
		if j.Status.CompletionTime != nil {
			jt.finish = j.Status.CompletionTime.Time
		}
	default:
		jt.failed = true
		if !jobCondition(j, batchv1.JobFailed) || j.Status.Failed < 1 {
			errf("want Failed with failed >= 1: %+v", j.Status)
		}
		for _, c := range j.Status.Conditions {
			if c.Type == batchv1.JobFailed {
				jt.finish = c.LastTransitionTime.Time
			}
		}
	}

	// the pods: one succeeded pod per completion index, each with its StageResult
	pods, err := env.cs.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "batch.kubernetes.io/job-name=" + j.Name})
	if err != nil {
		t.Fatal(err)
	}
	jt.pods = len(pods.Items)
	seen := map[int]bool{}
	for _, p := range pods.Items {
		if p.Spec.NodeName != nodeName {
			errf("pod %s on node %q", p.Name, p.Spec.NodeName)
		}
		if p.Status.Phase != corev1.PodSucceeded {
			if final {
				errf("pod %s is %s (%s)", p.Name, p.Status.Phase, p.Status.Reason)
			}
			continue
		}
		idx, err := strconv.Atoi(p.Annotations[batchv1.JobCompletionIndexAnnotation])
		if err != nil || idx < 0 || idx >= n || seen[idx] {
			errf("pod %s: completion index %q (seen %v)", p.Name, p.Annotations[batchv1.JobCompletionIndexAnnotation], seen)
			continue
		}
		seen[idx] = true
		term := p.Status.ContainerStatuses[0].State.Terminated
		var r alignv1.StageResult
		if term == nil || json.Unmarshal([]byte(term.Message), &r) != nil {
			errf("pod %s: termination message %+v is not a StageResult", p.Name, term)
			continue
		}
		wantIdx := idx
		if stage == alignv1.StageEval || stage == alignv1.StageReport {
			wantIdx = 0
		}
		// The report's message is its summary (baseline -> final); other stages say nothing.
		wantMsg := r.Message == ""
		if stage == alignv1.StageReport {
			wantMsg = strings.Contains(r.Message, "win rate")
		}
		if r.Stage != stage || int(r.Phase) != k || int(r.Index) != wantIdx || !wantMsg {
			errf("pod %s: StageResult %+v, want stage %s phase %d index %d", p.Name, r, stage, k, wantIdx)
		}
		jt.compute = max(jt.compute, r.DurationSeconds)
		jt.computeAllPods += r.DurationSeconds
		// the agent ran it: its log holds the process's stdout (the same StageResult)
		logb, err := os.ReadFile(filepath.Join(env.agentRoot, "logs", namespace+"_"+p.Name+".log"))
		if err != nil || !strings.Contains(string(logb), `"stage":"`+stage+`"`) {
			errf("pod %s: agent log without the StageResult (%v)", p.Name, err)
		}
	}
	if final && len(seen) != n {
		errf("succeeded pods cover indices %v, want 0..%d", seen, n-1)
	}
	return jt
}

// checkWorkspace checks the run's folder against docs/design.md's workspace layout and the
// status against the files.
func checkWorkspace(t *testing.T, run *alignv1.AlignmentRun) {
	t.Helper()
	root := filepath.Join(workspaceRoot(), run.Name)
	exists := func(rel string) bool {
		_, err := os.Stat(filepath.Join(root, rel))
		if err != nil {
			t.Errorf("workspace: %v", err)
		}
		return err == nil
	}
	readJSON := func(rel string, v any) bool {
		b, err := os.ReadFile(filepath.Join(root, rel))
		if err == nil {
			err = json.Unmarshal(b, v)
		}
		if err != nil {
			t.Errorf("workspace %s: %v", rel, err)
		}
		return err == nil
	}
	var owner pipeline.Owner
	if readJSON("owner.json", &owner) && (owner.Name != run.Name || owner.UID != string(run.UID)) {
		t.Errorf("owner.json %+v, want %s %s", owner, run.Name, run.UID)
	}
	if ak.model == "builtin" {
		exists("base/config.json")
		exists("base/model.safetensors")
	}
	for k := 1; k <= qsPhases; k++ {
		ph := fmt.Sprintf("phase-%d", k)
		pr := run.Status.PhaseResults[k]
		exists(ph + "/behavior/model.safetensors")
		exists(ph + "/behavior/config.json")
		if _, err := os.Stat(filepath.Join(root, ph, "reference")); err == nil {
			t.Errorf("workspace: %s/reference exists, but the reference is the behavior model (trustRegion.reference Behavior)", ph)
		}
		rows := 0
		for s := range qsSampleShards {
			rows += countLines(t, filepath.Join(root, ph, "samples", fmt.Sprintf("shard-%d.jsonl", s)), func(line []byte) error {
				var r pipeline.SampleRow
				if err := json.Unmarshal(line, &r); err != nil {
					return err
				}
				if r.Prompt == "" || len(r.Responses) != qsSamplesPerPrompt || len(r.BehaviorLogps) != qsSamplesPerPrompt {
					return fmt.Errorf("sample row %+v", r)
				}
				return nil
			})
			exists(fmt.Sprintf("%s/sample-%d.done.json", ph, s))
		}
		if rows != qsPairsPerPhase {
			t.Errorf("workspace %s/samples: %d rows, want %d", ph, rows, qsPairsPerPhase)
		}
		pairs := 0
		for s := range qsLabelShards {
			pairs += countLines(t, filepath.Join(root, ph, "pairs", fmt.Sprintf("shard-%d.jsonl", s)), func(line []byte) error {
				var p pipeline.Pair
				if err := json.Unmarshal(line, &p); err != nil {
					return err
				}
				if p.Prompt == "" || p.Phase != k || p.ScoreChosen <= p.ScoreRejected {
					return fmt.Errorf("pair prompt %q phase %d scores %v/%v", p.Prompt, p.Phase, p.ScoreChosen, p.ScoreRejected)
				}
				return nil
			})
			exists(fmt.Sprintf("%s/label-%d.done.json", ph, s))
		}
		if int64(pairs) != pr.PairsKept {
			t.Errorf("workspace %s/pairs: %d pairs, status pairsKept %d", ph, pairs, pr.PairsKept)
		}
		var losses []float64
		for m := range qsMembers {
			md := fmt.Sprintf("%s/members/member-%d/", ph, m)
			for _, f := range []string{"adapter.safetensors", "optimizer.safetensors", "rng.json"} {
				exists(md + f)
			}
			var r alignv1.StageResult
			if readJSON(fmt.Sprintf("%s/train-%d.done.json", ph, m), &r) && r.Loss != nil {
				losses = append(losses, *r.Loss)
			}
		}
		if len(losses) == qsMembers {
			mean := 0.0
			for _, l := range losses {
				mean += l
			}
			if got := formatMetric(mean / float64(len(losses))); got != pr.Loss {
				t.Errorf("%s: status loss %q, members' done markers give %q", ph, pr.Loss, got)
			}
		}
		var ev pipeline.EvalResult
		exists(ph + "/eval.done.json")
		if readJSON(ph+"/eval/result.json", &ev) {
			if ev.Phase != k || ev.Prompts != qsEvalPrompts || len(ev.PerPrompt) != qsEvalPrompts {
				t.Errorf("%s/eval/result.json: phase %d prompts %d perPrompt %d, want %d, %d", ph, ev.Phase, ev.Prompts, len(ev.PerPrompt), k, qsEvalPrompts)
			}
			for what, pair := range map[string][2]string{
				"winRate":     {pr.WinRate, formatMetric(ev.WinRate)},
				"goldReward":  {pr.GoldReward, formatMetric(ev.GoldReward)},
				"klToInitial": {pr.KLToInitial, formatMetric(ev.KLToInitial)},
			} {
				if pair[0] != pair[1] {
					t.Errorf("%s: status %s %q, eval/result.json gives %q", ph, what, pair[0], pair[1])
				}
			}
		}
	}
	if ckpt := run.Status.LatestCheckpoint; ckpt != "" {
		if _, err := os.Stat(filepath.Join(workspaceRoot(), ckpt, "adapter.safetensors")); err != nil {
			t.Errorf("status.latestCheckpoint %s: %v", ckpt, err)
		}
	}
	checkReport(t, run, root)
}

// checkReport: the baseline's evaluation and the report stage's files are on the workspace where
// status says, the report compares the baseline with the final policy, and `bpo report
// --workspace` renders the very same report.md again from the run's folder alone.
func checkReport(t *testing.T, run *alignv1.AlignmentRun, root string) {
	t.Helper()
	var base pipeline.EvalResult
	if b, err := os.ReadFile(filepath.Join(root, "phase-0", "eval", "result.json")); err != nil || json.Unmarshal(b, &base) != nil {
		t.Errorf("baseline evaluation phase-0/eval/result.json: %v", err)
	} else if formatMetric(base.WinRate) != run.Status.BaselineWinRate {
		t.Errorf("status.baselineWinRate %q, phase-0/eval/result.json gives %s", run.Status.BaselineWinRate, formatMetric(base.WinRate))
	}
	path := filepath.Join(workspaceRoot(), run.Status.Report)
	md, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("status.report %q: %v", run.Status.Report, err)
		return
	}
	for _, want := range []string{"# Alignment report: " + run.Name, "Initial model vs final policy", "Sample completions", "winrate.png"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("%s lacks %q", path, want)
		}
	}
	for _, f := range []string{"winrate.png", "kl.png", "run.yaml"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("workspace: %v", err)
		}
	}
	if err := os.Rename(path, path+".pod"); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(env.podBin, "bpo"), "report", "--workspace", root).CombinedOutput()
	again, rerr := os.ReadFile(path)
	if err != nil || rerr != nil || string(again) != string(md) {
		t.Errorf("bpo report --workspace %s: %v (%v), same report.md as the report stage's: %v\n%s", root, err, rerr, string(again) == string(md), out)
	}
}

func countLines(t *testing.T, path string, check func([]byte) error) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("workspace: %v", err)
		return 0
	}
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if line == "" {
			continue
		}
		n++
		if err := check([]byte(line)); err != nil {
			t.Errorf("%s line %d: %v", path, n, err)
			return n
		}
	}
	return n
}

// checkEvents waits for at least n events of a reason about the run (events.k8s.io, as the
// controller records them).
func checkEvents(ctx context.Context, t *testing.T, run *alignv1.AlignmentRun, reason string, n int) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var got []string
	err := poll(wctx, 500*time.Millisecond, func() (bool, error) {
		l, err := env.cs.EventsV1().Events(namespace).List(wctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		got = got[:0]
		for _, e := range l.Items {
			if e.Reason == reason && e.Regarding.Name == run.Name && e.Regarding.UID == run.UID {
				got = append(got, e.Note)
			}
		}
		return len(got) >= n, nil
	})
	if err != nil {
		t.Errorf("want >= %d %s events about %s, got %d: %v (%v)", n, reason, run.Name, len(got), got, err)
		return
	}
	for _, g := range got {
		if reason != "StageSucceeded" {
			t.Logf("event %s: %s", reason, g)
		}
	}
}

// ------------------------------------------------------------------ the timeline

// report collects the timeline lines printed at the end and written to E2E_DIR/timeline.txt.
type report struct{ lines []string }

func (r *report) add(format string, args ...any) {
	r.lines = append(r.lines, fmt.Sprintf(format, args...))
}

func (r *report) write(t *testing.T) {
	text := strings.Join(r.lines, "\n") + "\n"
	t.Logf("timeline:\n%s", text)
	p := filepath.Join(env.dir, "timeline.txt")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Error(err)
	}
}

// runTimeline renders one run: time to first pod, each stage Job (created relative to the run,
// the gap since the previous Job finished, Job creation -> completion, pods, the stage's own
// compute time from its StageResults: the slowest pod), the phases, and the total. Job times
// have a resolution of one second.
func (r *report) runTimeline(t *testing.T, run *alignv1.AlignmentRun, applied, created time.Time, total time.Duration, pods *timeline, jobs []jobTiming) {
	r.add("")
	r.add("run %s (model %s, uid %s)", run.Name, ak.model, run.UID)
	if created.IsZero() {
		created = run.CreationTimestamp.Time
	}
	r.add("  kubectl apply -> run exists          %6.1fs", created.Sub(applied).Seconds())
	// the run is polled every 20 ms: its pods may be seen first
	if fc := pods.firstCreated(); !fc.IsZero() {
		r.add("  run exists -> first pod created      %6.2fs", max(fc.Sub(created).Seconds(), 0))
	}
	if fr, ok := pods.firstRunning(); ok {
		r.add("  run exists -> first pod Running      %6.2fs", max(fr.Sub(created).Seconds(), 0))
	}
	r.add("  %-28s %8s %6s %9s %5s %8s", "job", "created", "gap", "duration", "pods", "compute")
	base := run.CreationTimestamp.Time // same clock and resolution as the Jobs' timestamps
	var prevEnd time.Time
	var busy time.Duration
	for _, j := range jobs {
		gap := "-"
		if !prevEnd.IsZero() {
			gap = fmt.Sprintf("%.0fs", j.created.Sub(prevEnd).Seconds())
		}
		dur := "-"
		if !j.finish.IsZero() {
			d := j.finish.Sub(j.created)
			busy += d
			dur = fmt.Sprintf("%.0fs", d.Seconds())
			prevEnd = j.finish
		}
		state := ""
		if j.failed {
			state = " (failed: pod deleted)"
		}
		r.add("  %-28s %7s %6s %9s %5d %7.2fs%s", j.name, fmt.Sprintf("+%.0fs", j.created.Sub(base).Seconds()), gap, dur, j.pods, j.compute, state)
	}
	for _, pr := range run.Status.PhaseResults {
		r.add("  phase %d: %ds (status durationSeconds); pairs %d kept of %d; loss %s; win rate %s", pr.Phase, pr.DurationSeconds, pr.PairsKept, pr.PairsSampled, pr.Loss, pr.WinRate)
	}
	if st := run.Status; st.StartTime != nil && st.CompletionTime != nil {
		r.add("  status startTime -> completionTime   %6.0fs (Jobs created -> complete: %.0fs of it)", st.CompletionTime.Sub(st.StartTime.Time).Seconds(), busy.Seconds())
	}
	r.add("  kubectl apply -> Succeeded (seen)    %6.1fs", total.Seconds())
}
