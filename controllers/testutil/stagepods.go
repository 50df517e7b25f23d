package testutil

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	alignv1 "github.com/bpo-dev/bpo/api/v1alpha1"
)

// envtest runs only kube-apiserver and etcd: no Job controller, no scheduler, no kubelet. The
// helpers below play their part for a stage Job, the way the real ones would leave it:
//
//   - one Pod per completion index, created from the Job's pod template (so it carries the
//     Job's selector labels batch.kubernetes.io/controller-uid and job-name plus the run's
//     labels), with the batch.kubernetes.io/job-completion-index annotation and a controller
//     owner reference to the Job;
//   - the Pod's status set to Succeeded (or Failed) with the `bpo` container terminated and the
//     StageResult JSON as its termination message, exactly what the controller reads;
//   - the Job's status set to what the Job controller writes at the end: startTime,
//     completionTime, succeeded/completedIndexes and the SuccessCriteriaMet + Complete
//     conditions (or failed and FailureTarget + Failed).

// SucceedJob completes a stage Job; result(i) is the StageResult of completion index i.
func SucceedJob(ctx context.Context, c client.Client, job *batchv1.Job, result func(index int32) alignv1.StageResult) error {
	n := ptr.Deref(job.Spec.Completions, 1)
	for i := range n {
		msg, err := json.Marshal(result(i))
		if err != nil {
			return err
		}
		if err := stagePod(ctx, c, job, i, corev1.PodSucceeded, 0, string(msg)); err != nil {
			return err
		}
	}
	now := metav1.Now()
	start := metav1.NewTime(now.Add(-3 * time.Second))
	indexes := "0"
	if n > 1 {
		indexes = fmt.Sprintf("0-%d", n-1)
	}
	job.Status = batchv1.JobStatus{
		StartTime:               &start,
		CompletionTime:          &now,
		Succeeded:               n,
		CompletedIndexes:        indexes,
		Ready:                   ptr.To(int32(0)),
		Terminating:             ptr.To(int32(0)),
		UncountedTerminatedPods: &batchv1.UncountedTerminatedPods{},
		Conditions: []batchv1.JobCondition{
			{Type: batchv1.JobSuccessCriteriaMet, Status: corev1.ConditionTrue, Reason: batchv1.JobReasonCompletionsReached,
				Message: "Reached expected number of succeeded pods", LastProbeTime: now, LastTransitionTime: now},
			{Type: batchv1.JobComplete, Status: corev1.ConditionTrue, Reason: batchv1.JobReasonCompletionsReached,
				Message: "Reached expected number of succeeded pods", LastProbeTime: now, LastTransitionTime: now},
		},
	}
	return c.Status().Update(ctx, job)
}

// FailJob fails a stage Job: pod index 0 fails with exit code 1 and a StageResult carrying
// message, as `bpo` does on error.
func FailJob(ctx context.Context, c client.Client, job *batchv1.Job, message string) error {
	msg, err := json.Marshal(alignv1.StageResult{Stage: job.Labels[alignv1.LabelStage], Message: message})
	if err != nil {
		return err
	}
	if err := stagePod(ctx, c, job, 0, corev1.PodFailed, 1, string(msg)); err != nil {
		return err
	}
	now := metav1.Now()
	start := metav1.NewTime(now.Add(-2 * time.Second))
	job.Status = batchv1.JobStatus{
		StartTime:               &start,
		Failed:                  1,
		Ready:                   ptr.To(int32(0)),
		Terminating:             ptr.To(int32(0)),
		UncountedTerminatedPods: &batchv1.UncountedTerminatedPods{},
		Conditions: []batchv1.JobCondition{
			{Type: batchv1.JobFailureTarget, Status: corev1.ConditionTrue, Reason: batchv1.JobReasonBackoffLimitExceeded,
				Message: "Job has reached the specified backoff limit", LastProbeTime: now, LastTransitionTime: now},
			{Type: batchv1.JobFailed, Status: corev1.ConditionTrue, Reason: batchv1.JobReasonBackoffLimitExceeded,
				Message: "Job has reached the specified backoff limit", LastProbeTime: now, LastTransitionTime: now},
		},
	}
	return c.Status().Update(ctx, job)
}

func stagePod(ctx context.Context, c client.Client, job *batchv1.Job, index int32, phase corev1.PodPhase, exitCode int32, message string) error {
	pod := newStagePod(job, index)
	pod.Spec.NodeName = "envtest-node"
	if err := c.Create(ctx, pod); err != nil {
		return fmt.Errorf("creating pod for %s index %d: %w", job.Name, index, err)
	}
	now := metav1.Now()
	reason := "Completed"
	if exitCode != 0 {
		reason = "Error"
	}
	pod.Status = corev1.PodStatus{
		Phase: phase,
		ContainerStatuses: []corev1.ContainerStatus{{
			Name:    "bpo",
			Image:   pod.Spec.Containers[0].Image,
			ImageID: "docker.io/library/bpo@sha256:0000000000000000000000000000000000000000000000000000000000000000",
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: exitCode, Reason: reason, Message: message,
				StartedAt: metav1.NewTime(now.Add(-2 * time.Second)), FinishedAt: now,
				ContainerID: "containerd://" + strconv.FormatInt(now.UnixNano(), 16),
			}},
		}},
	}
	if err := c.Status().Update(ctx, pod); err != nil {
		return fmt.Errorf("setting status of pod %s: %w", pod.Name, err)
	}
	return nil
}

// PendingPod creates pod index of a stage Job that has not started, with the given status
// (e.g. a container waiting in ImagePullBackOff, or PodScheduled=False/Unschedulable), as the
// kubelet or the scheduler would report it. It returns the pod.
func PendingPod(ctx context.Context, c client.Client, job *batchv1.Job, index int32, status corev1.PodStatus) (*corev1.Pod, error) {
	pod := newStagePod(job, index)
	if err := c.Create(ctx, pod); err != nil {
		return nil, fmt.Errorf("creating pod for %s index %d: %w", job.Name, index, err)
	}
	if status.Phase == "" {
		status.Phase = corev1.PodPending
	}
	pod.Status = status
	if err := c.Status().Update(ctx, pod); err != nil {
		return nil, fmt.Errorf("setting status of pod %s: %w", pod.Name, err)
	}
	return pod, nil
}

// newStagePod is pod index of a stage Job as the Job controller would create it: from the
// pod template, with the completion index and a controller owner reference to the Job.
func newStagePod(job *batchv1.Job, index int32) *corev1.Pod {
	labels := map[string]string{}
	for k, v := range job.Spec.Template.Labels {
		labels[k] = v
	}
	labels[batchv1.JobCompletionIndexAnnotation] = strconv.Itoa(int(index))
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: fmt.Sprintf("%s-%d-", job.Name, index),
			Namespace:    job.Namespace,
			Labels:       labels,
			Annotations:  map[string]string{batchv1.JobCompletionIndexAnnotation: strconv.Itoa(int(index))},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "batch/v1", Kind: "Job", Name: job.Name, UID: job.UID,
				Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
			}},
		},
		Spec: *job.Spec.Template.Spec.DeepCopy(),
	}
}
