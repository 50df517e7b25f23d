package controllers

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	alignv1 "github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/controllers/testutil"
	"github.com/bpo-dev/bpo/stage/contract"
)

// TestObjectStoreWorkspacePod: with spec.workspace.objectStore every stage pod mounts an
// emptyDir at /workspace (no PVC at all) and gets the Secret's keys as AWS_* env by reference;
// a PVC workspace keeps its volume and gets no AWS env.
func TestObjectStoreWorkspacePod(t *testing.T) {
	t.Parallel()
	r := &AlignmentRunReconciler{StageImage: "img:default"}
	store := testutil.MakeRun("ns", "bucket").Mutate(func(a *alignv1.AlignmentRun) {
		a.Spec.Workspace = alignv1.WorkspaceSpec{ObjectStore: &alignv1.WorkspaceObjectStore{
			URI: "s3://runs/team", Endpoint: "http://minio:9000",
			SecretRef: &alignv1.ObjectStoreSecretRef{Name: "s3-keys", SecretAccessKeyKey: "secret"},
		}}
	}).Defaulted()
	pvc := testutil.MakeRun("ns", "volume").Defaulted()
	for _, stage := range contract.Stages {
		job := r.buildJob(store, 1, stage, 0)
		pod := job.Spec.Template.Spec
		var ws *corev1.Volume
		for i, v := range pod.Volumes {
			if v.PersistentVolumeClaim != nil {
				t.Fatalf("%s: a PVC volume %s with an object-store workspace", stage, v.Name)
			}
			if v.Name == "workspace" {
				ws = &pod.Volumes[i]
			}
		}
		if ws == nil || ws.EmptyDir == nil {
			t.Fatalf("%s: workspace volume %+v, want an emptyDir", stage, ws)
		}
		mounted := false
		for _, m := range pod.Containers[0].VolumeMounts {
			mounted = mounted || (m.Name == "workspace" && m.MountPath == contract.WorkspaceMountPath && m.SubPath == "")
		}
		if !mounted {
			t.Fatalf("%s: the emptyDir is not mounted at %s", stage, contract.WorkspaceMountPath)
		}
		got := map[string]string{}
		for _, e := range pod.Containers[0].Env {
			if strings.HasPrefix(e.Name, "AWS_") {
				if e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
					t.Fatalf("%s: %s must come from the Secret by reference: %+v", stage, e.Name, e)
				}
				got[e.Name] = e.ValueFrom.SecretKeyRef.Name + "/" + e.ValueFrom.SecretKeyRef.Key
			}
		}
		want := map[string]string{"AWS_ACCESS_KEY_ID": "s3-keys/AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "s3-keys/secret"}
		if len(got) != 2 || got["AWS_ACCESS_KEY_ID"] != want["AWS_ACCESS_KEY_ID"] || got["AWS_SECRET_ACCESS_KEY"] != want["AWS_SECRET_ACCESS_KEY"] {
			t.Fatalf("%s: AWS env %v, want %v", stage, got, want)
		}

		vpod := r.buildJob(pvc, 1, stage, 0).Spec.Template.Spec
		found := false
		for _, v := range vpod.Volumes {
			found = found || (v.Name == "workspace" && v.PersistentVolumeClaim != nil)
		}
		for _, e := range vpod.Containers[0].Env {
			if strings.HasPrefix(e.Name, "AWS_") {
				t.Fatalf("%s: AWS env %s on a PVC workspace", stage, e.Name)
			}
		}
		if !found {
			t.Fatalf("%s: the PVC workspace lost its volume", stage)
		}
	}
}
