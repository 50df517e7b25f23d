package controllers

import (
	"context"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	alignv1 "github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/controllers/testutil"
)

func rl(kv ...string) corev1.ResourceList {
	if len(kv) == 0 {
		return nil
	}
	out := corev1.ResourceList{}
	for i := 0; i < len(kv); i += 2 {
		out[corev1.ResourceName(kv[i])] = resource.MustParse(kv[i+1])
	}
	return out
}

// sameList compares resource lists by quantity value (1Gi == 1024Mi).
func sameList(a, b corev1.ResourceList) bool {
	if len(a) != len(b) {
		return false
	}
	for k, q := range a {
		o, ok := b[k]
		if !ok || q.Cmp(o) != 0 {
			return false
		}
	}
	return true
}

func TestStageResources(t *testing.T) {
	t.Parallel()
	defaults := corev1.ResourceRequirements{Requests: rl("cpu", "100m", "memory", "256Mi"), Limits: rl("memory", "2Gi")}
	cases := map[string]struct {
		stage, defaults corev1.ResourceRequirements
		wantReq         corev1.ResourceList
		wantLim         corev1.ResourceList
	}{
		"unset stage gets every default": {
			defaults: defaults, wantReq: rl("cpu", "100m", "memory", "256Mi"), wantLim: rl("memory", "2Gi"),
		},
		"no defaults: the stage's own (BestEffort stays possible)": {},
		"a stage request replaces that default only": {
			stage:    corev1.ResourceRequirements{Requests: rl("cpu", "4")},
			defaults: defaults, wantReq: rl("cpu", "4", "memory", "256Mi"), wantLim: rl("memory", "2Gi"),
		},
		"a stage limit without request: no default request (Kubernetes copies the limit)": {
			stage:    corev1.ResourceRequirements{Limits: rl("cpu", "2", "memory", "1Gi")},
			defaults: defaults, wantReq: nil, wantLim: rl("cpu", "2", "memory", "1Gi"),
		},
		"a memory request above the default limit raises the limit to it": {
			stage:    corev1.ResourceRequirements{Requests: rl("memory", "8Gi")},
			defaults: defaults, wantReq: rl("cpu", "100m", "memory", "8Gi"), wantLim: rl("memory", "8Gi"),
		},
		"GPUs are the stage's alone": {
			stage:    corev1.ResourceRequirements{Limits: rl("nvidia.com/gpu", "1")},
			defaults: defaults, wantReq: rl("cpu", "100m", "memory", "256Mi"), wantLim: rl("memory", "2Gi", "nvidia.com/gpu", "1"),
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			stage := *tc.stage.DeepCopy()
			got := stageResources(tc.stage, tc.defaults)
			if !sameList(got.Requests, tc.wantReq) || !sameList(got.Limits, tc.wantLim) {
				t.Errorf("requests %v limits %v, want %v %v", got.Requests, got.Limits, tc.wantReq, tc.wantLim)
			}
			if !sameList(tc.stage.Requests, stage.Requests) || !sameList(tc.stage.Limits, stage.Limits) {
				t.Errorf("the run's spec was modified: %v", tc.stage)
			}
		})
	}
	// The shipped defaults are a valid, Burstable combination.
	d := DefaultStageResources()
	for name, lim := range d.Limits {
		if req, ok := d.Requests[name]; ok && req.Cmp(lim) > 0 {
			t.Errorf("default %s request %s above its limit %s", name, req.String(), lim.String())
		}
	}
	if len(d.Requests) == 0 || d.Limits.Memory().IsZero() {
		t.Errorf("DefaultStageResources %v: want requests and a memory limit", d)
	}
}

// TestBuildJobStageDefaults: the Job of every stage carries the merged resources, its own
// stage's deadline only, the disruption-tolerant podFailurePolicy, and stays an Indexed Job
// whose attempts are new Jobs (backoffLimit 0).
func TestBuildJobStageDefaults(t *testing.T) {
	t.Parallel()
	r := &AlignmentRunReconciler{StageImage: "img:1", StageResources: DefaultStageResources()}
	run := testutil.MakeRun("ns", "dl").Mutate(func(a *alignv1.AlignmentRun) {
		a.Spec.Trainer.ActiveDeadlineSeconds = ptr.To(int64(600))
		a.Spec.Trainer.Resources = corev1.ResourceRequirements{Requests: rl("cpu", "2", "memory", "3Gi")}
		a.Spec.Evaluator.ActiveDeadlineSeconds = ptr.To(int64(120))
	}).Defaulted()
	cases := []struct {
		stage    string
		deadline *int64
		req, lim corev1.ResourceList
	}{
		{"sample", nil, rl("cpu", "100m", "memory", "256Mi"), rl("memory", "2Gi")},
		{"label", nil, rl("cpu", "100m", "memory", "256Mi"), rl("memory", "2Gi")},
		{"train", ptr.To(int64(600)), rl("cpu", "2", "memory", "3Gi"), rl("memory", "3Gi")},
		{"eval", ptr.To(int64(120)), rl("cpu", "100m", "memory", "256Mi"), rl("memory", "2Gi")},
	}
	for _, tc := range cases {
		job := r.buildJob(run, 1, tc.stage, 0)
		spec := job.Spec
		if !ptr.Equal(spec.ActiveDeadlineSeconds, tc.deadline) {
			t.Errorf("%s: activeDeadlineSeconds %v, want %v", tc.stage, ptr.Deref(spec.ActiveDeadlineSeconds, -1), ptr.Deref(tc.deadline, -1))
		}
		res := spec.Template.Spec.Containers[0].Resources
		if !sameList(res.Requests, tc.req) || !sameList(res.Limits, tc.lim) {
			t.Errorf("%s: resources %v / %v, want %v / %v", tc.stage, res.Requests, res.Limits, tc.req, tc.lim)
		}
		if ptr.Deref(spec.CompletionMode, "") != batchv1.IndexedCompletion || ptr.Deref(spec.BackoffLimit, -1) != 0 || spec.BackoffLimitPerIndex != nil {
			t.Errorf("%s: completionMode %v backoffLimit %v backoffLimitPerIndex %v", tc.stage, spec.CompletionMode, spec.BackoffLimit, spec.BackoffLimitPerIndex)
		}
		pfp := spec.PodFailurePolicy
		if pfp == nil || len(pfp.Rules) != 1 || pfp.Rules[0].Action != batchv1.PodFailurePolicyActionIgnore ||
			len(pfp.Rules[0].OnPodConditions) != 1 || pfp.Rules[0].OnPodConditions[0].Type != corev1.DisruptionTarget ||
			pfp.Rules[0].OnPodConditions[0].Status != corev1.ConditionTrue {
			t.Errorf("%s: podFailurePolicy %+v, want DisruptionTarget=True ignored", tc.stage, pfp)
		}
		if spec.Template.Spec.RestartPolicy != corev1.RestartPolicyNever {
			t.Errorf("%s: restartPolicy %s (podFailurePolicy needs Never)", tc.stage, spec.Template.Spec.RestartPolicy)
		}
	}
	// The run's spec is not modified by the merge.
	if run.Spec.Trainer.Resources.Limits != nil || run.Spec.Sampler.Resources.Requests != nil {
		t.Errorf("buildJob wrote defaults into the run's spec: %+v %+v", run.Spec.Trainer.Resources, run.Spec.Sampler.Resources)
	}
}

func TestDeadlineMessage(t *testing.T) {
	t.Parallel()
	failed := func(reason string, ads *int64) *batchv1.Job {
		return &batchv1.Job{
			ObjectMeta: metav1.ObjectMeta{Name: "r-p1-train", Labels: map[string]string{alignv1.LabelStage: "train"}},
			Spec:       batchv1.JobSpec{ActiveDeadlineSeconds: ads},
			Status: batchv1.JobStatus{Conditions: []batchv1.JobCondition{
				{Type: batchv1.JobFailed, Status: corev1.ConditionTrue, Reason: reason, Message: "Job was active longer than specified deadline"},
			}},
		}
	}
	if msg, ok := deadlineMessage(failed(batchv1.JobReasonDeadlineExceeded, ptr.To(int64(600)))); !ok ||
		msg != "job r-p1-train: the train stage ran longer than spec.trainer.activeDeadlineSeconds (600s) and was stopped; raise the deadline or the stage's resources" {
		t.Errorf("deadline message %q %v", msg, ok)
	}
	if _, ok := deadlineMessage(failed(batchv1.JobReasonBackoffLimitExceeded, ptr.To(int64(600)))); ok {
		t.Errorf("a backoff failure reported as a deadline")
	}
	// The message wins over a stopped pod's log tail.
	pod := corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "r-p1-train-0"},
		Status: corev1.PodStatus{Phase: corev1.PodFailed, ContainerStatuses: []corev1.ContainerStatus{{
			Name: containerName, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 143, Message: "step 41 loss 0.6"}},
		}}},
	}
	if msg, fromPod := failureMessage(failed(batchv1.JobReasonDeadlineExceeded, ptr.To(int64(600))), []corev1.Pod{pod}); !fromPod || !strings.Contains(msg, "spec.trainer.activeDeadlineSeconds (600s)") {
		t.Errorf("failureMessage %q (final %v)", msg, fromPod)
	}
	if msg, _ := failureMessage(failed(batchv1.JobReasonBackoffLimitExceeded, nil), []corev1.Pod{pod}); !strings.Contains(msg, "step 41 loss 0.6") {
		t.Errorf("a stage's own failure lost its message: %q", msg)
	}
}

// TestStageJobDefaultsEnvtest: the API server accepts the Job with the defaults (the merged
// resources, the deadline, the podFailurePolicy), and a Job the Job controller fails for its
// deadline fails the run with a message naming the field.
func TestStageJobDefaultsEnvtest(t *testing.T) {
	requireEnv(t)
	t.Parallel()
	ctx := context.Background()
	ns := newNamespace(t, "stagedefaults")
	startManager(t, ns, func(r *AlignmentRunReconciler) { r.StageResources = DefaultStageResources() })
	run := createRun(t, testutil.MakeRun(ns, "dl").BackoffLimit(0).Mutate(func(a *alignv1.AlignmentRun) {
		a.Spec.Sampler.ActiveDeadlineSeconds = ptr.To(int64(30))
		a.Spec.Sampler.Resources = corev1.ResourceRequirements{Limits: rl("memory", "1Gi")}
	}).Obj())

	job := waitJob(t, ns, JobName(run.Name, 1, "sample", 0))
	if ptr.Deref(job.Spec.ActiveDeadlineSeconds, 0) != 30 {
		t.Errorf("stored Job activeDeadlineSeconds %v", job.Spec.ActiveDeadlineSeconds)
	}
	res := job.Spec.Template.Spec.Containers[0].Resources
	// The stage's memory limit stands alone (the pod's memory request becomes that limit).
	if !sameList(res.Requests, rl("cpu", "100m")) || !sameList(res.Limits, rl("memory", "1Gi")) {
		t.Errorf("stored Job resources %v / %v", res.Requests, res.Limits)
	}
	if pfp := job.Spec.PodFailurePolicy; pfp == nil || len(pfp.Rules) != 1 || pfp.Rules[0].OnPodConditions[0].Type != corev1.DisruptionTarget {
		t.Errorf("stored Job podFailurePolicy %+v", pfp)
	}

	// The Job controller's part at the deadline: the running pod is stopped (SIGTERM, exit
	// 143, its log tail as the termination message) and the Job fails with DeadlineExceeded.
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: job.Name + "-0-", Namespace: ns, Labels: job.Spec.Template.Labels,
			Annotations: map[string]string{batchv1.JobCompletionIndexAnnotation: "0"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: "Job", Name: job.Name, UID: job.UID,
				Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}},
		},
		Spec: *job.Spec.Template.Spec.DeepCopy(),
	}
	pod.Spec.NodeName = "envtest-node"
	must(t, k8sClient.Create(ctx, pod))
	now := metav1.Now()
	pod.Status = corev1.PodStatus{Phase: corev1.PodFailed, ContainerStatuses: []corev1.ContainerStatus{{
		Name: containerName, Image: pod.Spec.Containers[0].Image, ImageID: "docker.io/library/bpo@sha256:" + strings.Repeat("0", 64),
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 143, Reason: "Error",
			Message: "sampled 900 of 1000 prompts", StartedAt: metav1.NewTime(now.Add(-31 * time.Second)), FinishedAt: now,
			ContainerID: "containerd://deadline"}},
	}}}
	must(t, k8sClient.Status().Update(ctx, pod))
	start := metav1.NewTime(now.Add(-31 * time.Second))
	job.Status = batchv1.JobStatus{
		StartTime: &start, Failed: 1, Ready: ptr.To(int32(0)), Terminating: ptr.To(int32(0)),
		UncountedTerminatedPods: &batchv1.UncountedTerminatedPods{},
		Conditions: []batchv1.JobCondition{
			{Type: batchv1.JobFailureTarget, Status: corev1.ConditionTrue, Reason: batchv1.JobReasonDeadlineExceeded,
				Message: "Job was active longer than specified deadline", LastProbeTime: now, LastTransitionTime: now},
			{Type: batchv1.JobFailed, Status: corev1.ConditionTrue, Reason: batchv1.JobReasonDeadlineExceeded,
				Message: "Job was active longer than specified deadline", LastProbeTime: now, LastTransitionTime: now},
		},
	}
	must(t, k8sClient.Status().Update(ctx, job))

	got := waitCondition(t, ns, run.Name, alignv1.ConditionFailed, metav1.ConditionTrue, alignv1.ReasonStageFailed)
	for _, c := range got.Status.Conditions {
		if c.Type != alignv1.ConditionFailed {
			continue
		}
		if !strings.Contains(c.Message, "ran longer than spec.sampler.activeDeadlineSeconds (30s)") || strings.Contains(c.Message, "sampled 900") {
			t.Errorf("Failed message %q: want the deadline named, not the stopped pod's log", c.Message)
		}
	}
}

// TestStageDeadlineValidated: a per-stage deadline below 1 is refused by Validate (bpo run -f)
// and by the CRD, naming the field.
func TestStageDeadlineValidated(t *testing.T) {
	t.Parallel()
	bad := testutil.MakeRun("ns", "bad").Mutate(func(a *alignv1.AlignmentRun) { a.Spec.Labeler.ActiveDeadlineSeconds = ptr.To(int64(0)) })
	errs := bad.Defaulted().Validate()
	if len(errs) != 1 || errs[0].Field != "spec.labeler.activeDeadlineSeconds" {
		t.Errorf("Validate: %v, want one error on spec.labeler.activeDeadlineSeconds", errs)
	}
	if envReason != "" {
		return
	}
	ns := newNamespace(t, "stagedeadline")
	obj := bad.Obj()
	obj.Namespace = ns
	err := k8sClient.Create(context.Background(), obj)
	if err == nil || !strings.Contains(err.Error(), "spec.labeler.activeDeadlineSeconds") {
		t.Errorf("the CRD accepted spec.labeler.activeDeadlineSeconds=0: %v", err)
	}
}
