package controllers

import (
	"context"
	"strings"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	alignv1 "github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/controllers/testutil"
)

// TestNameSquattersRefused: a Job or ConfigMap that has the name a run needs but is not the run's
// (no labels, so the label-scoped cache never shows it) fails the run with reason NameConflict;
// before, the run waited forever for the Job, and the ConfigMap's run.yaml drove the stage pods.
func TestNameSquattersRefused(t *testing.T) {
	requireEnv(t)
	t.Parallel()
	ns := newNamespace(t, "squat")
	startManager(t, ns)
	ctx := context.Background()

	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: "squat-job-p1-sample", Namespace: ns},
		Spec: batchv1.JobSpec{Suspend: ptrTo(true), Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers:    []corev1.Container{{Name: "x", Image: "example.com/x"}},
		}}},
	}
	must(t, k8sClient.Create(ctx, job))
	createRun(t, testutil.MakeRun(ns, "squat-job").Obj())
	r := waitCondition(t, ns, "squat-job", alignv1.ConditionFailed, metav1.ConditionTrue, alignv1.ReasonNameConflict)
	if c := findCondition(r, alignv1.ConditionFailed); !strings.Contains(c.Message, "Job "+ns+"/squat-job-p1-sample") {
		t.Errorf("Failed message %q does not name the Job", c.Message)
	}

	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "squat-cm-spec", Namespace: ns},
		Data:       map[string]string{"run.yaml": "spec: {}"},
	}
	must(t, k8sClient.Create(ctx, cm))
	createRun(t, testutil.MakeRun(ns, "squat-cm").Obj())
	r = waitCondition(t, ns, "squat-cm", alignv1.ConditionFailed, metav1.ConditionTrue, alignv1.ReasonNameConflict)
	if c := findCondition(r, alignv1.ConditionFailed); !strings.Contains(c.Message, "ConfigMap "+ns+"/squat-cm-spec") {
		t.Errorf("Failed message %q does not name the ConfigMap", c.Message)
	}
	if jobs := listJobs(t, ns, "squat-cm"); len(jobs) != 0 {
		t.Errorf("%d Jobs started on a squatted ConfigMap", len(jobs))
	}
}

func findCondition(r *alignv1.AlignmentRun, t string) metav1.Condition {
	for _, c := range r.Status.Conditions {
		if c.Type == t {
			return c
		}
	}
	return metav1.Condition{}
}

func ptrTo[T any](v T) *T { return &v }
