package controllers

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	alignv1 "github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/controllers/testutil"
)

func TestPodHold(t *testing.T) {
	waiting := func(reason, msg string) corev1.PodStatus {
		return corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{{
			Name: "bpo", Image: "bpo:typo", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}}}}
	}
	for _, c := range []struct {
		name   string
		status corev1.PodStatus
		want   string // substring; "" = not held
	}{
		{"image pull back-off", waiting("ImagePullBackOff", "Back-off pulling image"), "container bpo (image bpo:typo): ImagePullBackOff: Back-off pulling image"},
		{"bad image name", waiting("InvalidImageName", "couldn't parse"), "InvalidImageName"},
		{"missing secret", waiting("CreateContainerConfigError", `secret "tok" not found`), `secret "tok" not found`},
		{"still creating", waiting("ContainerCreating", ""), ""},
		{"unschedulable", corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
			Reason: corev1.PodReasonUnschedulable, Message: "0/3 nodes are available: 3 Insufficient memory."}}}, "unschedulable: 0/3 nodes are available: 3 Insufficient memory."},
		{"scheduled, running", corev1.PodStatus{Phase: corev1.PodRunning}, ""},
		{"failed pod", func() corev1.PodStatus { s := waiting("ErrImagePull", "x"); s.Phase = corev1.PodFailed; return s }(), ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := podHold(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Status: c.status})
			if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
				t.Errorf("podHold = %q, want %q", got, c.want)
			}
		})
	}
}

// TestKueueQueuedStages: a run labelled for Kueue gets its stage Jobs labelled and created
// suspended; the status says the stage is queued until the Job is admitted (unsuspended).
func TestKueueQueuedStages(t *testing.T) {
	requireEnv(t)
	t.Parallel()
	ctx := context.Background()
	ns := newNamespace(t, "kueue")
	startManager(t, ns)
	run := createRun(t, testutil.MakeRun(ns, "queued").Phases(1).Members(1).
		Label(alignv1.LabelKueueQueueName, "team-a").Label(alignv1.LabelKueuePriorityClass, "high").Obj())

	job := waitJob(t, ns, "queued-p1-sample")
	if !ptr.Deref(job.Spec.Suspend, false) || job.Labels[alignv1.LabelKueueQueueName] != "team-a" || job.Labels[alignv1.LabelKueuePriorityClass] != "high" {
		t.Fatalf("queued Job: suspend %v labels %v", job.Spec.Suspend, job.Labels)
	}
	r := waitCondition(t, ns, run.Name, alignv1.ConditionRunning, metav1.ConditionTrue, alignv1.ReasonStageQueued)
	if c := meta.FindStatusCondition(r.Status.Conditions, alignv1.ConditionRunning); !strings.Contains(c.Message, `LocalQueue "team-a"`) {
		t.Errorf("queued message %q", c.Message)
	}
	if cols, _ := printerColumns(t, ns, run.Name); cols["State"] != string(alignv1.StateRunning) {
		t.Errorf("printer columns while queued %v", cols)
	}
	waitEvents(t, ns, run.Name, alignv1.ReasonStageQueued)

	// Kueue admits the workload: it unsuspends the Job.
	patch := client.MergeFrom(job.DeepCopy())
	job.Spec.Suspend = ptr.To(false)
	must(t, k8sClient.Patch(ctx, job, patch))
	waitCondition(t, ns, run.Name, alignv1.ConditionRunning, metav1.ConditionTrue, alignv1.ReasonStageRunning)

	succeed(t, ns, "queued-p1-sample")
	if next := waitJob(t, ns, "queued-p1-label"); !ptr.Deref(next.Spec.Suspend, false) || next.Labels[alignv1.LabelKueueQueueName] != "team-a" {
		t.Errorf("next stage not queued: suspend %v labels %v", next.Spec.Suspend, next.Labels)
	}

	// Without the label nothing is suspended.
	plain := createRun(t, testutil.MakeRun(ns, "plain").Phases(1).Members(1).Obj())
	if j := waitJob(t, ns, "plain-p1-sample"); j.Spec.Suspend != nil && *j.Spec.Suspend {
		t.Errorf("unlabelled run's Job is suspended")
	}
	waitCondition(t, ns, plain.Name, alignv1.ConditionRunning, metav1.ConditionTrue, alignv1.ReasonStageRunning)
}

// TestStuckPodsSurfaced: a stage pod that cannot start shows in the Running condition (reason
// StagePodsPending, the kubelet's or scheduler's words) and as a Warning event, and clears
// when the pod goes away.
func TestStuckPodsSurfaced(t *testing.T) {
	requireEnv(t)
	t.Parallel()
	ctx := context.Background()
	ns := newNamespace(t, "stuck")
	startManager(t, ns)
	for _, c := range []struct {
		name, want string
		status     corev1.PodStatus
	}{
		{"pull", "ImagePullBackOff: Back-off pulling image \"bpo:typo\"", corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{
			Name: "bpo", Image: "bpo:typo", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: `Back-off pulling image "bpo:typo"`}}}}}},
		{"sched", "unschedulable: 0/2 nodes are available: 2 Insufficient cpu.", corev1.PodStatus{Conditions: []corev1.PodCondition{{
			Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable, Message: "0/2 nodes are available: 2 Insufficient cpu."}}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			run := createRun(t, testutil.MakeRun(ns, c.name).Phases(1).Members(1).Obj())
			job := waitJob(t, ns, c.name+"-p1-sample")
			waitCondition(t, ns, run.Name, alignv1.ConditionRunning, metav1.ConditionTrue, alignv1.ReasonStageRunning)
			pod, err := testutil.PendingPod(ctx, k8sClient, job, 0, c.status)
			must(t, err)
			r := waitCondition(t, ns, run.Name, alignv1.ConditionRunning, metav1.ConditionTrue, alignv1.ReasonStagePodsPending)
			msg := meta.FindStatusCondition(r.Status.Conditions, alignv1.ConditionRunning).Message
			if !strings.Contains(msg, c.want) || !strings.Contains(msg, "phase 1/1 stage sample") || !strings.Contains(msg, pod.Name) {
				t.Errorf("message %q lacks %q", msg, c.want)
			}
			waitEvents(t, ns, run.Name, alignv1.ReasonStagePodsPending)
			if r.Status.Conditions == nil || meta.IsStatusConditionTrue(r.Status.Conditions, alignv1.ConditionFailed) {
				t.Errorf("a pending pod must not fail the run")
			}
			must(t, k8sClient.Delete(ctx, pod))
			waitCondition(t, ns, run.Name, alignv1.ConditionRunning, metav1.ConditionTrue, alignv1.ReasonStageRunning)
			if n := count(eventReasons(t, ns, run.Name), alignv1.ReasonStagePodsPending); n != 1 {
				t.Errorf("%d StagePodsPending events, want 1 (one per change)", n)
			}
		})
	}
}
