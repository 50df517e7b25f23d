package controllers

import (
	corev1 "k8s.io/api/core/v1"

	alignv1 "github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/stage/contract"
)

// workspaceVolume is what a stage pod mounts at /workspace: the run's PersistentVolumeClaim (at
// spec.workspace.subPath), or, with spec.workspace.objectStore, an emptyDir the stage stages its
// inputs into and publishes its outputs from (docs/storage.md). ok is false without either (a
// spec the API server refuses).
func workspaceVolume(ws *alignv1.WorkspaceSpec) (v corev1.Volume, m corev1.VolumeMount, ok bool) {
	v.Name, m.Name, m.MountPath = "workspace", "workspace", contract.WorkspaceMountPath
	switch {
	case ws.PersistentVolumeClaim != nil:
		v.VolumeSource = corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{
			ClaimName: ws.PersistentVolumeClaim.ClaimName,
		}}
		m.SubPath = ws.SubPath
	case ws.ObjectStore != nil:
		v.VolumeSource = corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}
	default:
		return v, m, false
	}
	return v, m, true
}

// workspaceEnv carries an object store's credentials into a stage pod: the Secret's keys as
// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (what the AWS SDK reads), by reference only, so
// the keys never appear in the Job, the spec ConfigMap, status or events.
func workspaceEnv(ws *alignv1.WorkspaceSpec) []corev1.EnvVar {
	if ws.ObjectStore == nil {
		return nil
	}
	return secretKeyEnv(ws.ObjectStore.SecretRef, alignv1.EnvAWSAccessKeyID, alignv1.EnvAWSSecretAccessKey)
}

// outputEnv carries spec.output's credentials into the export pod, by reference, under names
// of their own (BPO_OUTPUT_*), so that the output bucket may take other credentials than the
// workspace's.
func outputEnv(o *alignv1.OutputSpec) []corev1.EnvVar {
	if o == nil {
		return nil
	}
	return secretKeyEnv(o.SecretRef, alignv1.EnvOutputAccessKeyID, alignv1.EnvOutputSecretAccessKey)
}

// secretKeyEnv is an access key pair's two variables, each a reference to its Secret key.
func secretKeyEnv(r *alignv1.ObjectStoreSecretRef, idName, secretName string) []corev1.EnvVar {
	if r == nil {
		return nil
	}
	idKey, secretKey := r.Keys()
	ref := func(key string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: r.Name}, Key: key,
		}}
	}
	return []corev1.EnvVar{
		{Name: idName, ValueFrom: ref(idKey)},
		{Name: secretName, ValueFrom: ref(secretKey)},
	}
}
