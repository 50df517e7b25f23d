package controllers

import (
	"fmt"
	"strings"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	alignv1 "github.com/bpo-dev/bpo/api/v1alpha1"
)

// stuckWaiting are the container waiting reasons that do not clear by themselves soon: the
// user has to fix an image name, a pull secret, a ConfigMap or Secret reference, or a quota.
var stuckWaiting = map[string]bool{
	"ErrImagePull": true, "ImagePullBackOff": true, "InvalidImageName": true, "ErrImageNeverPull": true,
	"CreateContainerConfigError": true, "CreateContainerError": true, "RunContainerError": true,
}

// jobHold says why an unfinished stage Job visibly makes no progress: it is suspended
// (queued, e.g. in Kueue), or one of its pods cannot start. It returns the Running reason
// and a message, or "" when nothing holds the stage back.
func jobHold(job *batchv1.Job, pods []corev1.Pod) (reason, msg string) {
	if ptr.Deref(job.Spec.Suspend, false) {
		if q := job.Labels[alignv1.LabelKueueQueueName]; q != "" {
			return alignv1.ReasonStageQueued, fmt.Sprintf("Job %s is queued in Kueue LocalQueue %q and waits for admission (suspended until admitted; is Kueue installed and the queue defined?)", job.Name, q)
		}
		return alignv1.ReasonStageQueued, fmt.Sprintf("Job %s is suspended and waits for whatever suspended it to resume it", job.Name)
	}
	for i := range pods {
		if why := podHold(&pods[i]); why != "" {
			return alignv1.ReasonStagePodsPending, fmt.Sprintf("Job %s: %s", job.Name, why)
		}
	}
	return "", ""
}

// podHold explains why a live pod cannot start ("" if it can or already did).
func podHold(pod *corev1.Pod) string {
	if !pod.DeletionTimestamp.IsZero() || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return ""
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
			return fmt.Sprintf("pod %s is unschedulable: %s", pod.Name, strings.TrimSpace(c.Message))
		}
	}
	statuses := append(append([]corev1.ContainerStatus(nil), pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...)
	for _, cs := range statuses {
		if w := cs.State.Waiting; w != nil && stuckWaiting[w.Reason] {
			return fmt.Sprintf("pod %s container %s (image %s): %s: %s", pod.Name, cs.Name, cs.Image, w.Reason, strings.TrimSpace(w.Message))
		}
	}
	return ""
}
