package controllers

import (
	"context"
	"strings"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	alignv1 "github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/controllers/testutil"
)

// TestValidateRejectsInvalidSpecs: the Go-side Validate rejects the same essential cases as
// admission (the shared table), naming the field. No API server.
func TestValidateRejectsInvalidSpecs(t *testing.T) {
	t.Parallel()
	if errs := testutil.MakeRun("ns", "ok").Defaulted().Validate(); len(errs) > 0 {
		t.Fatalf("the base run is invalid: %v", errs)
	}
	for file, sample := range sampleRuns(t) {
		sample.SetDefaults()
		if errs := sample.Validate(); len(errs) > 0 {
			t.Fatalf("sample %s is invalid: %v", file, errs)
		}
	}
	for _, tc := range testutil.InvalidCases {
		t.Run(tc.Name, func(t *testing.T) {
			run := testutil.MakeRun("ns", "run").Obj()
			tc.Mutate(run)
			run.SetDefaults()
			errs := run.Validate()
			if len(errs) == 0 {
				t.Fatalf("Validate accepted it")
			}
			if msg := errs.ToAggregate().Error(); !strings.Contains(msg, tc.GoField) {
				t.Errorf("Validate: %q\n does not name %q", msg, tc.GoField)
			}
		})
	}
}

func TestValidateLocalAcceptsWorkspacePath(t *testing.T) {
	t.Parallel()
	run := testutil.MakeRun("ns", "local").Mutate(func(r *alignv1.AlignmentRun) {
		r.Spec.Workspace = alignv1.WorkspaceSpec{Path: "/tmp/bpo"}
	}).Defaulted()
	if errs := run.ValidateLocal(); len(errs) > 0 {
		t.Errorf("ValidateLocal: %v", errs)
	}
	if errs := run.Validate(); len(errs) == 0 || !strings.Contains(errs.ToAggregate().Error(), "spec.workspace.persistentVolumeClaim") {
		t.Errorf("Validate (cluster) accepted a workspace without a PVC: %v", errs)
	}
}

// TestInvalidSpecSurfacedAsFailed: on a cluster that skipped admission validation, the
// controller reports Failed/InvalidSpec and creates nothing. The object reaches the
// reconciler through a fake client (a real API server would reject it).
func TestInvalidSpecSurfacedAsFailed(t *testing.T) {
	t.Parallel()
	run := testutil.MakeRun("ns", "bad").Loss(alignv1.LossDPO, "0").Defaulted()
	run.UID, run.Generation = types.UID("uid-1"), 3
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(run).WithStatusSubresource(run).Build()
	rec := events.NewFakeRecorder(10)
	r := &AlignmentRunReconciler{Client: c, Scheme: scheme, Recorder: rec, StageImage: DefaultStageImage}
	if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: types.NamespacedName{Namespace: "ns", Name: "bad"}}); err != nil {
		t.Fatal(err)
	}
	got := &alignv1.AlignmentRun{}
	must(t, c.Get(context.Background(), types.NamespacedName{Namespace: "ns", Name: "bad"}, got))
	cond := meta.FindStatusCondition(got.Status.Conditions, alignv1.ConditionFailed)
	if cond == nil || cond.Status != metav1.ConditionTrue || cond.Reason != alignv1.ReasonInvalidSpec ||
		!strings.Contains(cond.Message, "spec.loss.beta") || cond.ObservedGeneration != 3 || got.Status.ObservedGeneration != 3 {
		t.Errorf("Failed condition %+v, observedGeneration %d", cond, got.Status.ObservedGeneration)
	}
	if len(rec.Events) != 1 || !strings.Contains(<-rec.Events, alignv1.ReasonInvalidSpec) {
		t.Errorf("expected one InvalidSpec event")
	}
	// Nothing was created.
	var jobs batchv1.JobList
	var cms corev1.ConfigMapList
	must(t, c.List(context.Background(), &jobs))
	must(t, c.List(context.Background(), &cms))
	if len(jobs.Items)+len(cms.Items) != 0 {
		t.Errorf("created %d Jobs and %d ConfigMaps for an invalid run", len(jobs.Items), len(cms.Items))
	}
}

// TestJobNamesFitDNSLabels: the longest run name with the largest phase, stage and attempt
// still gives Job names whose Indexed pod hostnames (<job>-<index>) fit in 63 characters.
func TestJobNamesFitDNSLabels(t *testing.T) {
	t.Parallel()
	run := strings.Repeat("r", alignv1.MaxRunNameLength)
	for _, stage := range []string{"sample", "label", "train", "eval"} {
		name := JobName(run, alignv1.MaxPhases, stage, alignv1.MaxBackoffLimit)
		if host := name + "-63"; len(host) > 63 {
			t.Errorf("%s: hostname %q is %d characters", stage, host, len(host))
		}
	}
	if got := JobName("run", 2, "train", 0); got != "run-p2-train" {
		t.Errorf("JobName = %q", got)
	}
	if got := JobName("run", 2, "train", 3); got != "run-p2-train-a3" {
		t.Errorf("JobName = %q", got)
	}
}
