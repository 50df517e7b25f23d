package controllers

import (
	corev1 "k8s.io/api/core/v1"

	alignv1 "github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/stage/contract"
)

// modelImageVolume is the base model of an oci:// spec.model.uri: the image mounted read-only at
// contract.ModelImageMountPath as a Kubernetes image volume, pulled by the kubelet like a
// container image (so registry credentials are the pods' imagePullSecrets, and a digest pins
// it). Needs the ImageVolume feature (on by default since Kubernetes 1.35).
func modelImageVolume(m *alignv1.ModelSpec) (corev1.Volume, corev1.VolumeMount, bool) {
	ref := alignv1.ModelImage(m.URI)
	if ref == "" {
		return corev1.Volume{}, corev1.VolumeMount{}, false
	}
	v := corev1.Volume{Name: "model", VolumeSource: corev1.VolumeSource{Image: &corev1.ImageVolumeSource{
		Reference: ref, PullPolicy: corev1.PullIfNotPresent,
	}}}
	return v, corev1.VolumeMount{Name: "model", MountPath: contract.ModelImageMountPath, ReadOnly: true}, true
}
