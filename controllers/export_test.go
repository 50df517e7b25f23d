package controllers

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	alignv1 "github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/controllers/testutil"
	"github.com/bpo-dev/bpo/stage/contract"
)

// secretEnv is a container's environment variables that come from a Secret, as name ->
// "secret/key"; it fails the test on a variable of those names with a literal value.
func secretEnv(t *testing.T, job string, env []corev1.EnvVar) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, e := range env {
		if !strings.HasPrefix(e.Name, "AWS_") && !strings.HasPrefix(e.Name, "BPO_OUTPUT_") {
			continue
		}
		if e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
			t.Fatalf("%s: %s must come from a Secret by reference: %+v", job, e.Name, e)
		}
		out[e.Name] = e.ValueFrom.SecretKeyRef.Name + "/" + e.ValueFrom.SecretKeyRef.Key
	}
	return out
}

// TestExportPodEnv: only the export pod gets spec.output's keys, as BPO_OUTPUT_* by reference,
// next to the workspace's AWS_* (another Secret); a custom evaluator command does not replace
// the export's `bpo export`.
func TestExportPodEnv(t *testing.T) {
	t.Parallel()
	r := &AlignmentRunReconciler{StageImage: "img:default"}
	run := testutil.MakeRun("ns", "out").Mutate(func(a *alignv1.AlignmentRun) {
		a.Spec.Workspace = alignv1.WorkspaceSpec{ObjectStore: &alignv1.WorkspaceObjectStore{
			URI: "s3://runs/team", SecretRef: &alignv1.ObjectStoreSecretRef{Name: "ws-keys"},
		}}
		a.Spec.Output = &alignv1.OutputSpec{URI: "s3://models/out", SecretRef: &alignv1.ObjectStoreSecretRef{Name: "out-keys", AccessKeyIDKey: "id"}}
	}).Defaulted()
	for _, stage := range contract.Stages {
		job := r.buildJob(run, 2, stage, 0)
		got := secretEnv(t, job.Name, job.Spec.Template.Spec.Containers[0].Env)
		want := map[string]string{"AWS_ACCESS_KEY_ID": "ws-keys/AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "ws-keys/AWS_SECRET_ACCESS_KEY"}
		if stage == alignv1.StageExport {
			want[alignv1.EnvOutputAccessKeyID] = "out-keys/id"
			want[alignv1.EnvOutputSecretAccessKey] = "out-keys/AWS_SECRET_ACCESS_KEY"
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: secret env %v, want %v", stage, got, want)
		}
	}

	custom := testutil.MakeRun("ns", "custom").Mutate(func(a *alignv1.AlignmentRun) {
		a.Spec.Output = &alignv1.OutputSpec{URI: "s3://models/out"}
		a.Spec.Evaluator.Command = []string{"python", "eval.py"}
		a.Spec.Evaluator.Args = []string{"--judge", "x"}
		a.Spec.Evaluator.Image = "example.com/my-eval:v1"
	}).Defaulted()
	c := r.buildJob(custom, 2, alignv1.StageExport, 0).Spec.Template.Spec.Containers[0]
	if !slices.Equal(c.Command, []string{"bpo"}) || len(c.Args) == 0 || c.Args[0] != "export" || slices.Contains(c.Args, "--judge") || c.Image != "img:default" {
		t.Fatalf("export with a custom evaluator: image %s command %v args %v, want bpo export from the stage image", c.Image, c.Command, c.Args)
	}
}

// TestExportStageFolded drives a run with spec.output (and a baseline-free walk) through its
// stages against a real API server: the export Job comes last with the output Secret's keys by
// reference, and its StageResult's URIs land in status.outputs and the Succeeded message.
func TestExportStageFolded(t *testing.T) {
	requireEnv(t)
	t.Parallel()
	ns := newNamespace(t, "export")
	startManager(t, ns)
	run := createRun(t, testutil.MakeRun(ns, "flow").Phases(1).Members(1).Baseline(false).Mutate(func(a *alignv1.AlignmentRun) {
		a.Spec.Output = &alignv1.OutputSpec{URI: "s3://models/out", Endpoint: "http://minio:9000", SecretRef: &alignv1.ObjectStoreSecretRef{Name: "out-keys"}}
	}).Obj())
	want := []string{"sample", "label", "train", "eval", "export"}
	for _, stage := range want {
		name := JobName(run.Name, 1, stage, 0)
		job := waitJob(t, ns, name)
		if stage == alignv1.StageExport {
			got := secretEnv(t, name, job.Spec.Template.Spec.Containers[0].Env)
			if got[alignv1.EnvOutputAccessKeyID] != "out-keys/AWS_ACCESS_KEY_ID" || got[alignv1.EnvOutputSecretAccessKey] != "out-keys/AWS_SECRET_ACCESS_KEY" {
				t.Fatalf("export Job env %v", got)
			}
		}
		succeed(t, ns, name)
	}
	r := waitCondition(t, ns, run.Name, alignv1.ConditionSucceeded, metav1.ConditionTrue, alignv1.ReasonSucceeded)
	if o := r.Status.Outputs; o == nil || o.Policy != "s3://models/out/flow/policy" || o.Adapter != "s3://models/out/flow/adapter" {
		t.Fatalf("status.outputs = %+v", o)
	}
	if pr := phaseResult(&r.Status, 1, false); pr == nil || !slices.Equal(pr.CompletedStages, want) {
		t.Fatalf("phase 1 result %+v", pr)
	}
	if c := meta.FindStatusCondition(r.Status.Conditions, alignv1.ConditionSucceeded); !strings.Contains(c.Message, "policy s3://models/out/flow/policy") {
		t.Errorf("Succeeded message %q", c.Message)
	}
}
