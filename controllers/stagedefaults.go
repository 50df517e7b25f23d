package controllers

import (
	"fmt"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	alignv1 "github.com/bpo-dev/bpo/api/v1alpha1"
)

// DefaultStageResources are the operator-wide resources of stage containers (the manager flags'
// defaults). They fit the built-in engine on the bundled models: a request small enough that
// the shards and ensemble members of a run schedule side by side on a small node, so the pods are
// Burstable rather than BestEffort (first to be evicted under memory pressure), and a memory
// limit that keeps a runaway stage from taking the node's memory. No CPU limit: the engine sizes
// its threads from one when it is set (docs/deploy.md), and throttling only slows it down.
func DefaultStageResources() corev1.ResourceRequirements {
	return corev1.ResourceRequirements{
		Requests: corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("100m"),
			corev1.ResourceMemory: resource.MustParse("256Mi"),
		},
		Limits: corev1.ResourceList{
			corev1.ResourceMemory: resource.MustParse("2Gi"),
		},
	}
}

// stageResources merges the operator's defaults into a stage's resources, resource by resource:
//   - a default request applies when the stage sets neither a request nor a limit for that
//     resource (with only a limit, Kubernetes makes the request equal to it);
//   - a default limit applies when the stage sets no limit for that resource, raised to the
//     stage's own request when that is larger (a limit below the request is invalid).
//
// Resources the defaults do not name (GPUs, ephemeral storage) are the stage's alone.
func stageResources(stage, defaults corev1.ResourceRequirements) corev1.ResourceRequirements {
	out := *stage.DeepCopy()
	for name, q := range defaults.Requests {
		_, req := out.Requests[name]
		_, lim := out.Limits[name]
		if req || lim {
			continue
		}
		if out.Requests == nil {
			out.Requests = corev1.ResourceList{}
		}
		out.Requests[name] = q.DeepCopy()
	}
	for name, q := range defaults.Limits {
		if _, ok := out.Limits[name]; ok {
			continue
		}
		limit := q.DeepCopy()
		if req, ok := out.Requests[name]; ok && req.Cmp(limit) > 0 {
			limit = req.DeepCopy()
		}
		if out.Limits == nil {
			out.Limits = corev1.ResourceList{}
		}
		out.Limits[name] = limit
	}
	return out
}

// stageField is the spec field of a stage (sample -> sampler, ...), for messages.
func stageField(stage string) string {
	switch stage {
	case alignv1.StageSample:
		return "sampler"
	case alignv1.StageLabel:
		return "labeler"
	case alignv1.StageTrain:
		return "trainer"
	default:
		return "evaluator"
	}
}

// deadlineMessage explains a Job that the Job controller failed for passing its
// activeDeadlineSeconds (condition reason DeadlineExceeded). Its pods were stopped from outside,
// so their own messages (a log tail, exit code 143) would only mislead; ok is false for any other
// failure.
func deadlineMessage(job *batchv1.Job) (msg string, ok bool) {
	c := jobCondition(job, batchv1.JobFailed)
	if c == nil || c.Reason != batchv1.JobReasonDeadlineExceeded {
		return "", false
	}
	stage := job.Labels[alignv1.LabelStage]
	limit := "its activeDeadlineSeconds"
	if ads := job.Spec.ActiveDeadlineSeconds; ads != nil {
		limit = fmt.Sprintf("spec.%s.activeDeadlineSeconds (%ds)", stageField(stage), *ads)
	}
	return fmt.Sprintf("job %s: the %s stage ran longer than %s and was stopped; raise the deadline or the stage's resources", job.Name, stage, limit), true
}
