package controllers

import (
	"testing"

	corev1 "k8s.io/api/core/v1"

	alignv1 "github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/controllers/testutil"
	"github.com/bpo-dev/bpo/stage/contract"
)

// TestModelImageVolume: an oci:// model is accepted by the real API server (CEL) and every stage
// Job mounts the image read-only where the stage reads it; the API server accepts the Job with its
// image volume (the ImageVolume feature).
func TestModelImageVolume(t *testing.T) {
	requireEnv(t)
	t.Parallel()
	ns := newNamespace(t, "ociimage")
	startManager(t, ns)
	const ref = "ghcr.io/bpo-dev/models/gpt2-sft@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	w := testutil.MakeRun(ns, "oci").Phases(1).Members(1)
	w.Spec.Model = alignv1.ModelSpec{URI: "oci://" + ref}
	run := createRun(t, w.Obj())
	job := waitJob(t, ns, JobName(run.Name, 1, alignv1.StageSample, 0))
	pod := job.Spec.Template.Spec
	var vol *corev1.ImageVolumeSource
	for _, v := range pod.Volumes {
		if v.Name == "model" {
			vol = v.Image
		}
	}
	if vol == nil || vol.Reference != ref || vol.PullPolicy != corev1.PullIfNotPresent {
		t.Fatalf("model image volume %+v in %+v", vol, pod.Volumes)
	}
	mounted := false
	for _, m := range pod.Containers[0].VolumeMounts {
		mounted = mounted || (m.Name == "model" && m.MountPath == contract.ModelImageMountPath && m.ReadOnly)
	}
	if !mounted {
		t.Errorf("the model image is not mounted read-only at %s: %+v", contract.ModelImageMountPath, pod.Containers[0].VolumeMounts)
	}

	// Other models mount no image.
	plain := createRun(t, testutil.MakeRun(ns, "plain").Phases(1).Members(1).Obj())
	for _, v := range waitJob(t, ns, JobName(plain.Name, 1, alignv1.StageSample, 0)).Spec.Template.Spec.Volumes {
		if v.Image != nil {
			t.Errorf("a builtin model's Job has an image volume %+v", v)
		}
	}
}
