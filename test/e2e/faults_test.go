//go:build e2e

package e2e

// TestFaults: one small real AlignmentRun per fault (a manager killed mid-stage, an evicted
// stage pod, a deleted stage Job, a damaged sample shard), each checked for its outcome: a run
// that Succeeded with every sampled prompt labelled once and every member trained once on the
// phase's pairs, counted in the workspace files, or a run that Failed with a message naming the
// cause. It shares TestMain's control plane and, when TestAlignmentRunEndToEnd ran first, its
// chart and workspace claim.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	alignv1 "github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/controllers"
	"github.com/bpo-dev/bpo/pipeline"
)

// The fault runs: the scaled-down quickstart with one phase of 32 prompts, and a train stage
// long enough (faultEpochs passes) to be caught running.
const (
	faultPrompts      = 32
	faultPairsPerStep = 8
	faultEpochs       = 12
	faultShards       = 2 // sampler.parallelism
)

func TestFaults(t *testing.T) {
	dumpOnFailure(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	t.Cleanup(func() {
		if t.Failed() && ak.managerLog != "" {
			t.Logf("---- tail of logs/manager.log:\n%s", tailFile(ak.managerLog, 40))
		}
	})
	faultSetup(ctx, t)
	defer stopManager()
	t0 := time.Now()
	for _, tc := range []struct {
		name string
		f    func(context.Context, *testing.T)
	}{
		{"manager-killed-mid-stage", managerKilled},
		{"pod-evicted", podEvicted},
		{"job-deleted", jobDeleted},
		{"sample-shard-truncated", shardTruncated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t1 := time.Now()
			tc.f(ctx, t)
			record(t, "(i) fault "+tc.name+" (whole subtest)", time.Since(t1))
		})
	}
	record(t, "(i) TestFaults (all four runs)", time.Since(t0))
}

// faultSetup brings up what TestAlignmentRunEndToEnd sets up (tools, binaries, the chart, the
// manager, the workspace claim) unless it is there already: TestFaults also runs on its own
// (-run TestFaults).
func faultSetup(ctx context.Context, t *testing.T) {
	t.Helper()
	if ak.crc == nil {
		setupTools(t)
		prepareBinaries(t)
		ak.model = modelMode(t)
		var err error
		if ak.crc, err = newRuntimeClient(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := env.cs.AppsV1().Deployments(releaseNamespace).Get(ctx, chartFullname, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		installChart(ctx, t, &report{})
	} else if err != nil {
		t.Fatal(err)
	}
	if ak.managerCmd == nil {
		startManager(ctx, t)
	}
	prepareWorkspace(ctx, t, &report{})
}

// faultRun is the manifest of a fault run: one phase of faultPrompts prompts, faultEpochs
// passes over its pairs, then extra.
func faultRun(t *testing.T, name string, extra func(map[string]any)) []byte {
	return quickstart(t, name, func(obj map[string]any) {
		setPath(obj, 1, "spec", "trustRegion", "phases")
		setPath(obj, faultPrompts, "spec", "budget", "pairs")
		setPath(obj, faultPairsPerStep, "spec", "budget", "pairsPerStep")
		setPath(obj, faultEpochs, "spec", "budget", "epochsPerPhase")
		setPath(obj, 8, "spec", "budget", "evalPrompts")
		setPath(obj, faultShards, "spec", "sampler", "parallelism")
		// No baseline (and so no report): the faults are in the data path of phase 1, and each
		// stage has one Job to count.
		setPath(obj, false, "spec", "evaluator", "baseline")
		if extra != nil {
			extra(obj)
		}
	})
}

// managerKilled: SIGKILL the manager while a train pod runs, let the Job finish while no
// manager watches, start a new manager (it takes the Lease once the dead one's expires). The
// run goes on from its Jobs: every stage ran once, no retry.
func managerKilled(ctx context.Context, t *testing.T) {
	const name = "fault-manager"
	applyManifest(ctx, t, name+".yaml", faultRun(t, name, nil))
	train := name + "-p1-train"
	victim := waitRunningPod(ctx, t, train)
	tKill := time.Now()
	killManager(t)
	t.Logf("manager killed while pod %s of %s runs", victim.Name, train)
	// the Job goes on without a manager
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if err := poll(wctx, 200*time.Millisecond, func() (bool, error) {
		j, err := env.cs.BatchV1().Jobs(namespace).Get(wctx, train, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if jobCondition(j, batchv1.JobFailed) {
			return false, fmt.Errorf("job %s failed: %+v", train, j.Status)
		}
		return jobCondition(j, batchv1.JobComplete), nil
	}); err != nil {
		t.Fatalf("train Job without a manager: %v", err)
	}
	if run, err := getRun(ctx, name); err != nil {
		t.Fatal(err)
	} else if pr := findPhase(run, 1); pr != nil && pr.HasCompleted(alignv1.StageTrain) {
		t.Fatalf("the status records train done although no manager ran: %s", statusJSON(run))
	}
	startManager(ctx, t)
	t1 := time.Now()
	run := waitSucceeded(ctx, t, name, 5*time.Minute)
	record(t, "(i) manager SIGKILL -> run Succeeded", time.Since(tKill))
	record(t, "(i) new manager started -> run Succeeded", time.Since(t1))
	checkFaultJobs(ctx, t, run, nil)
	checkFaultRun(t, run)
}

// killManager SIGKILLs the manager: no Lease release, no cleanup, like a crash or an OOM kill.
func killManager(t *testing.T) {
	t.Helper()
	c := ak.managerCmd
	if c == nil {
		t.Fatal("no manager to kill")
	}
	if err := c.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	// startManager's goroutine reaps it
	for i := 0; i < 100 && syscall.Kill(c.Process.Pid, 0) == nil; i++ {
		time.Sleep(50 * time.Millisecond)
	}
	ak.managerCmd = nil
	_ = os.Remove(filepath.Join(env.dir, "run", "manager.pid"))
	_ = os.Remove(filepath.Join(env.dir, "run", "manager.cmd"))
}

// podEvicted: a running train pod is evicted through the Eviction API (as a node drain does).
// The API server marks it DisruptionTarget, the Job's podFailurePolicy ignores that failure and
// the Job replaces the pod: the stage completes in its first attempt, no retry is spent.
func podEvicted(ctx context.Context, t *testing.T) {
	const name = "fault-evict"
	applyManifest(ctx, t, name+".yaml", faultRun(t, name, nil))
	train := name + "-p1-train"
	victim := waitRunningPod(ctx, t, train)
	// Watched from before the eviction: the pod may leave the API soon after it failed.
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	w, err := env.cs.CoreV1().Pods(namespace).Watch(wctx, metav1.ListOptions{FieldSelector: "metadata.name=" + victim.Name, ResourceVersion: victim.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	tEvict := time.Now()
	err = env.cs.CoreV1().Pods(namespace).EvictV1(ctx, &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: victim.Name, Namespace: namespace}})
	if err != nil {
		t.Fatalf("evict %s: %v", victim.Name, err)
	}
	t.Logf("evicted pod %s (index %s) of %s", victim.Name, victim.Annotations[batchv1.JobCompletionIndexAnnotation], train)
	// The API server marks the pod DisruptionTarget, then deletes it; the agent stops it and
	// reports it Failed.
	var last *corev1.Pod
	for last == nil || last.Status.Phase != corev1.PodFailed {
		ev, ok := <-w.ResultChan()
		if !ok {
			t.Fatalf("evicted pod %s never seen Failed (last seen %+v)", victim.Name, last)
		}
		if p, isPod := ev.Object.(*corev1.Pod); isPod && p.UID == victim.UID {
			last = p
		}
	}
	if !podCondition(last, corev1.DisruptionTarget) {
		t.Errorf("evicted pod %s has no DisruptionTarget condition: %+v", last.Name, last.Status.Conditions)
	}
	record(t, "(i) train pod evicted -> pod Failed (DisruptionTarget)", time.Since(tEvict))
	idx := victim.Annotations[batchv1.JobCompletionIndexAnnotation]
	if err := poll(wctx, 100*time.Millisecond, func() (bool, error) {
		l, err := env.cs.CoreV1().Pods(namespace).List(wctx, metav1.ListOptions{LabelSelector: "batch.kubernetes.io/job-name=" + train})
		if err != nil {
			return false, err
		}
		for _, p := range l.Items {
			if p.UID != victim.UID && p.Annotations[batchv1.JobCompletionIndexAnnotation] == idx {
				return true, nil
			}
		}
		return false, nil
	}); err != nil {
		t.Fatalf("no replacement pod for index %s of %s: %v", idx, train, err)
	}
	record(t, "(i) train pod evicted -> replacement pod created", time.Since(tEvict))
	run := waitSucceeded(ctx, t, name, 5*time.Minute)
	record(t, "(i) train pod evicted -> run Succeeded", time.Since(tEvict))
	if j, err := env.cs.BatchV1().Jobs(namespace).Get(ctx, train, metav1.GetOptions{}); err == nil {
		t.Logf("Job %s: succeeded %d failed %d (the eviction is not the stage's failure)", j.Name, j.Status.Succeeded, j.Status.Failed)
	}
	checkFaultJobs(ctx, t, run, nil)
	checkFaultRun(t, run)
}

// jobDeleted: the running train Job is deleted (as `kubectl delete job` does: background
// propagation). The controller creates it again under the same name and attempt; the stage's
// outputs are idempotent, so the run ends as an undisturbed one would.
func jobDeleted(ctx context.Context, t *testing.T) {
	const name = "fault-deljob"
	applyManifest(ctx, t, name+".yaml", faultRun(t, name, nil))
	train := name + "-p1-train"
	waitRunningPod(ctx, t, train)
	old, err := env.cs.BatchV1().Jobs(namespace).Get(ctx, train, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tDel := time.Now()
	if err := env.cs.BatchV1().Jobs(namespace).Delete(ctx, train, metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationBackground)}); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := poll(wctx, 100*time.Millisecond, func() (bool, error) {
		j, err := env.cs.BatchV1().Jobs(namespace).Get(wctx, train, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil && j.UID != old.UID, err
	}); err != nil {
		t.Fatalf("Job %s was not created again after its deletion: %v", train, err)
	}
	record(t, "(i) train Job deleted -> Job created again", time.Since(tDel))
	run := waitSucceeded(ctx, t, name, 5*time.Minute)
	record(t, "(i) train Job deleted -> run Succeeded", time.Since(tDel))
	checkFaultJobs(ctx, t, run, nil)
	checkFaultRun(t, run)
}

// shardTruncated: after sampling, before labelling, the last row of sample shard 0 is cut off
// (the file still reads as valid JSON lines). The label pod is held back until then by an env
// var from a ConfigMap that does not exist yet (CreateContainerConfigError). The label stage must
// refuse the shard, naming the file and the fix, on each attempt; the run Fails with it.
func shardTruncated(ctx context.Context, t *testing.T) {
	const name, gate = "fault-shard", "fault-shard-gate"
	applyManifest(ctx, t, name+".yaml", faultRun(t, name, func(obj map[string]any) {
		setPath(obj, []any{map[string]any{"name": "GATE", "valueFrom": map[string]any{
			"configMapKeyRef": map[string]any{"name": gate, "key": "open"}}}}, "spec", "labeler", "env")
		setPath(obj, 1, "spec", "backoffLimit")
	}))
	label := name + "-p1-label"
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if err := poll(wctx, 200*time.Millisecond, func() (bool, error) {
		l, err := env.cs.CoreV1().Pods(namespace).List(wctx, metav1.ListOptions{LabelSelector: "batch.kubernetes.io/job-name=" + label})
		if err != nil {
			return false, err
		}
		for _, p := range l.Items {
			for _, cs := range p.Status.ContainerStatuses {
				if w := cs.State.Waiting; w != nil && w.Reason == "CreateContainerConfigError" {
					return true, nil
				}
			}
		}
		return false, nil
	}); err != nil {
		t.Fatalf("the label pod never waited for ConfigMap %s: %v", gate, err)
	}
	root := filepath.Join(workspaceRoot(), name)
	shard := filepath.Join(root, "phase-1", "samples", "shard-0.jsonl")
	b, err := os.ReadFile(shard)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.SplitAfter(bytes.TrimSuffix(b, []byte("\n")), []byte("\n"))
	if err := os.WriteFile(shard, bytes.Join(lines[:len(lines)-1], nil), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("cut %s from %d to %d rows", shard, len(lines), len(lines)-1)
	tOpen := time.Now()
	if _, err := env.cs.CoreV1().ConfigMaps(namespace).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: gate, Namespace: namespace}, Data: map[string]string{"open": "1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	run := waitFailed(ctx, t, name, 3*time.Minute)
	record(t, "(i) truncated shard: label let go -> run Failed", time.Since(tOpen))
	c := condition(run, alignv1.ConditionFailed)
	t.Logf("Failed: %s: %s", c.Reason, c.Message)
	for _, want := range []string{
		"phase 1/1 stage label failed after 2 attempts (backoffLimit 1)",
		fmt.Sprintf("sample shard 0 of phase 1 (%s) holds %d rows, its sample stage wrote %d", shard, len(lines)-1, len(lines)),
		"truncated", "delete it and its done marker " + filepath.Join(root, "phase-1", "sample-0.done.json"),
	} {
		if !strings.Contains(c.Message, want) {
			t.Errorf("Failed message %q\n lacks %q", c.Message, want)
		}
	}
	if c.Reason != alignv1.ReasonStageFailed {
		t.Errorf("Failed reason %s, want %s", c.Reason, alignv1.ReasonStageFailed)
	}
	checkFaultJobs(ctx, t, run, map[string]int{alignv1.StageLabel: 2})
	if _, err := os.Stat(filepath.Join(root, "phase-1", "pairs", "shard-0.jsonl")); err == nil {
		t.Error("the label stage wrote pairs from a truncated shard")
	}
	if _, err := os.Stat(filepath.Join(root, "phase-1", "label-0.done.json")); err == nil {
		t.Error("the label stage marked itself done over a truncated shard")
	}
}

// waitFailed waits for the run's Failed condition (a dead manager or Success ends the wait).
func waitFailed(ctx context.Context, t *testing.T, name string, timeout time.Duration) *alignv1.AlignmentRun {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var run *alignv1.AlignmentRun
	err := poll(wctx, 200*time.Millisecond, func() (bool, error) {
		managerAlive(t)
		var err error
		if run, err = getRun(wctx, name); err != nil {
			return false, err
		}
		if c := condition(run, alignv1.ConditionSucceeded); c != nil && c.Status == metav1.ConditionTrue {
			return false, fmt.Errorf("run %s Succeeded", name)
		}
		c := condition(run, alignv1.ConditionFailed)
		return c != nil && c.Status == metav1.ConditionTrue, nil
	})
	if err != nil {
		t.Fatalf("run %s did not fail: %v; status %s", name, err, statusJSON(run))
	}
	return run
}

func podCondition(p *corev1.Pod, ct corev1.PodConditionType) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == ct && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

func findPhase(run *alignv1.AlignmentRun, k int32) *alignv1.PhaseResult {
	for i := range run.Status.PhaseResults {
		if run.Status.PhaseResults[i].Phase == k {
			return &run.Status.PhaseResults[i]
		}
	}
	return nil
}

func completionsFault(stage string) int {
	switch stage {
	case alignv1.StageSample:
		return faultShards
	case alignv1.StageTrain:
		return qsMembers
	default:
		return 1
	}
}

// checkFaultJobs checks the run's Jobs: per stage of phase 1, attempts[stage] Jobs (default 1:
// no retry), named as the controller names them; the last one Complete with one succeeded pod
// per completion, except the stage a failed run stopped at, whose Jobs all Failed.
func checkFaultJobs(ctx context.Context, t *testing.T, run *alignv1.AlignmentRun, attempts map[string]int) {
	t.Helper()
	list, err := env.cs.BatchV1().Jobs(namespace).List(ctx, metav1.ListOptions{LabelSelector: alignv1.LabelRun + "=" + run.Name})
	if err != nil {
		t.Fatal(err)
	}
	failed := isTrueCond(run, alignv1.ConditionFailed)
	byStage := map[string][]batchv1.Job{}
	for _, j := range list.Items {
		byStage[j.Labels[alignv1.LabelStage]] = append(byStage[j.Labels[alignv1.LabelStage]], j)
	}
	for _, stage := range qsStages {
		jobs := byStage[stage]
		sort.Slice(jobs, func(a, b int) bool { return jobs[a].Name < jobs[b].Name })
		want, ok := attempts[stage]
		if !ok {
			want = 1
		}
		if failed && !ok && len(jobs) == 0 {
			continue // after the stage the run failed at
		}
		var names []string
		for _, j := range jobs {
			names = append(names, j.Name)
		}
		if len(jobs) != want {
			t.Errorf("stage %s: Jobs %v, want %d attempt(s)", stage, names, want)
			continue
		}
		for i := range jobs {
			j := &jobs[i]
			if w := controllers.JobName(run.Name, 1, stage, int32(i)); j.Name != w {
				t.Errorf("stage %s: Job %s, want %s", stage, j.Name, w)
			}
			if i == len(jobs)-1 && !(failed && stage == run.Status.Stage) {
				if !jobCondition(j, batchv1.JobComplete) || int(j.Status.Succeeded) != completionsFault(stage) {
					t.Errorf("Job %s: want Complete with %d succeeded: %+v", j.Name, completionsFault(stage), j.Status)
				}
			} else if !jobCondition(j, batchv1.JobFailed) {
				t.Errorf("Job %s: want Failed: %+v", j.Name, j.Status)
			}
		}
	}
	if !failed && run.Status.Retries != 0 {
		t.Errorf("status.retries %d, want 0", run.Status.Retries)
	}
}

func isTrueCond(run *alignv1.AlignmentRun, ct string) bool {
	c := condition(run, ct)
	return c != nil && c.Status == metav1.ConditionTrue
}

// checkFaultRun counts a Succeeded fault run in its workspace: every prompt of the phase was
// sampled once, in order, across the shards; each non-identical row was labelled once (a pair
// or a tie, pairs in prompt order with no index twice); each member trained on exactly the
// phase's pairs, for exactly the steps of faultEpochs passes; and the status says the same.
func checkFaultRun(t *testing.T, run *alignv1.AlignmentRun) {
	t.Helper()
	root := filepath.Join(workspaceRoot(), run.Name, "phase-1")
	if len(run.Status.PhaseResults) != 1 {
		t.Fatalf("phaseResults: %s", statusJSON(run))
	}
	pr := run.Status.PhaseResults[0]
	var rows []pipeline.SampleRow
	for s := range faultShards {
		r, err := pipeline.ReadJSONL[pipeline.SampleRow](filepath.Join(root, "samples", fmt.Sprintf("shard-%d.jsonl", s)))
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, r...)
	}
	identical := map[int]bool{}
	for i, r := range rows {
		if r.Index != i {
			t.Fatalf("sample row %d has index %d: a prompt is missing or repeated", i, r.Index)
		}
		identical[i] = r.Identical
	}
	if len(rows) != faultPrompts {
		t.Errorf("%d sample rows, want %d", len(rows), faultPrompts)
	}
	pairs, err := pipeline.ReadJSONL[pipeline.Pair](filepath.Join(root, "pairs", "shard-0.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	prev := -1
	for _, p := range pairs {
		if p.Index <= prev || p.Index >= len(rows) || identical[p.Index] || p.Phase != 1 {
			t.Errorf("pair of prompt %d (phase %d) after %d: not labelled exactly once from a sampled row", p.Index, p.Phase, prev)
		}
		prev = p.Index
	}
	var label, train alignv1.StageResult
	readMarker(t, filepath.Join(root, "label-0.done.json"), &label)
	nIdentical := 0
	for _, v := range identical {
		if v {
			nIdentical++
		}
	}
	if int(label.Pairs) != len(pairs) || int(label.Pairs+label.Ties+label.Identical) != len(rows) || int(label.Identical) != nIdentical {
		t.Errorf("label marker %d pairs + %d ties + %d identical; the files hold %d pairs of %d rows (%d identical)",
			label.Pairs, label.Ties, label.Identical, len(pairs), len(rows), nIdentical)
	}
	steps := faultEpochs * ((faultPrompts + faultPairsPerStep - 1) / faultPairsPerStep)
	for m := range qsMembers {
		readMarker(t, filepath.Join(root, fmt.Sprintf("train-%d.done.json", m)), &train)
		if int(train.Pairs) != len(pairs) || int(train.Steps) != steps {
			t.Errorf("member %d trained on %d pairs in %d steps, want the phase's %d pairs in %d steps", m, train.Pairs, train.Steps, len(pairs), steps)
		}
	}
	if int(pr.Samples) != faultPrompts*qsSamplesPerPrompt || int(pr.PairsSampled+pr.Identical) != faultPrompts ||
		int(pr.Identical) != nIdentical || int(pr.PairsKept) != len(pairs) || pr.PairsKept+pr.Ties != pr.PairsSampled {
		t.Errorf("status phase 1: samples %d, pairsSampled %d, identical %d, kept %d, ties %d; the files hold %d rows (%d identical), %d pairs",
			pr.Samples, pr.PairsSampled, pr.Identical, pr.PairsKept, pr.Ties, len(rows), nIdentical, len(pairs))
	}
	t.Logf("%s: %d prompts sampled, %d pairs labelled (%d ties, %d identical), %d members x %d steps",
		run.Name, len(rows), len(pairs), label.Ties, nIdentical, qsMembers, steps)
}

func readMarker(t *testing.T, path string, r *alignv1.StageResult) {
	t.Helper()
	*r = alignv1.StageResult{}
	b, err := os.ReadFile(path)
	if err == nil {
		err = json.Unmarshal(b, r)
	}
	if err != nil {
		t.Fatalf("done marker: %v", err)
	}
}
