package controllers

import (
	"fmt"
	"strconv"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	alignv1 "github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/stage/contract"
)

// Pod-side names of the stage contract that only the controller uses (the rest, paths, flags
// and environment, are in package stage/contract).
const (
	containerName = "bpo"

	// stagePodFSGroup owns the workspace volume's files so that the non-root stage process can
	// write them whatever its uid (65532 is the distroless "nonroot" user and group).
	stagePodFSGroup = 65532

	// stageContractVersion is recorded in status.stageContract when a run starts: the contract
	// its stage Jobs are built with.
	stageContractVersion = contract.Version
)

// JobName is the deterministic name of the Job running attempt n (0-based) of a stage of
// phase k: <run>-p<k>-<stage>, plus -a<n> for retries.
func JobName(run string, k int32, stage string, attempt int32) string {
	name := fmt.Sprintf("%s-p%d-%s", run, k, stage)
	if attempt > 0 {
		name += fmt.Sprintf("-a%d", attempt)
	}
	return name
}

// ConfigMapName is the name of the run's spec ConfigMap.
func ConfigMapName(run string) string { return run + "-spec" }

// runDocument is the shape of run.yaml in the spec ConfigMap (and of `bpo run -f` input).
type runDocument struct {
	APIVersion string                   `json:"apiVersion"`
	Kind       string                   `json:"kind"`
	Metadata   runDocumentMeta          `json:"metadata"`
	Spec       alignv1.AlignmentRunSpec `json:"spec"`
}

type runDocumentMeta struct {
	Name      string    `json:"name"`
	Namespace string    `json:"namespace"`
	UID       types.UID `json:"uid"`
}

// renderRunYAML renders run.yaml: apiVersion, kind, metadata.name/namespace/uid and spec.
func renderRunYAML(run *alignv1.AlignmentRun) (string, error) {
	b, err := yaml.Marshal(runDocument{
		APIVersion: alignv1.GroupVersion.String(),
		Kind:       "AlignmentRun",
		Metadata:   runDocumentMeta{Name: run.Name, Namespace: run.Namespace, UID: run.UID},
		Spec:       run.Spec,
	})
	return string(b), err
}

func childLabels(run *alignv1.AlignmentRun) map[string]string {
	return map[string]string{alignv1.LabelRun: run.Name}
}

// buildConfigMap returns the desired spec ConfigMap (owner reference added by the caller).
func buildConfigMap(run *alignv1.AlignmentRun) (*corev1.ConfigMap, error) {
	doc, err := renderRunYAML(run)
	if err != nil {
		return nil, err
	}
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{
			Name:      ConfigMapName(run.Name),
			Namespace: run.Namespace,
			Labels:    childLabels(run),
		},
		Data: map[string]string{contract.RunConfigKey: doc},
	}, nil
}

// stageTemplate returns the scheduling template of a stage and its number of completions
// (= parallelism, contract.Completions).
func stageTemplate(spec *alignv1.AlignmentRunSpec, stage string) (*alignv1.StageTemplate, int32) {
	n := contract.Completions(spec, stage)
	switch stage {
	case alignv1.StageSample:
		return &spec.Sampler.StageTemplate, n
	case alignv1.StageLabel:
		return &spec.Labeler.StageTemplate, n
	case alignv1.StageTrain:
		return &spec.Trainer.StageTemplate, n
	default:
		return &spec.Evaluator.StageTemplate, n
	}
}

// buildJob returns attempt n of a stage Job of phase k (owner reference added by the caller).
func (r *AlignmentRunReconciler) buildJob(run *alignv1.AlignmentRun, k int32, stage string, attempt int32) *batchv1.Job {
	spec := &run.Spec
	tmpl, completions := stageTemplate(spec, stage)

	labels := map[string]string{
		alignv1.LabelRun:     run.Name,
		alignv1.LabelPhase:   strconv.Itoa(int(k)),
		alignv1.LabelStage:   stage,
		alignv1.LabelAttempt: strconv.Itoa(int(attempt)),
	}
	podLabels := map[string]string{}
	for k, v := range labels {
		podLabels[k] = v
	}

	// `bpo <stage>`, the contract's flags, spec.<stage>.args; or spec.<stage>.command,
	// spec.<stage>.args, the contract's flags (contract.Invocation.CommandLine).
	if stage == alignv1.StageExport && len(tmpl.Command) > 0 {
		// The export is bpo's own stage: a custom evaluator's program (and its image and args)
		// would not know it. It keeps the evaluator's scheduling.
		t := *tmpl
		t.Command, t.Args, t.Image = nil, nil, ""
		tmpl = &t
	}
	command, args := contract.PodInvocation(spec, stage, k).CommandLine(tmpl.Command, tmpl.Args)

	env := []corev1.EnvVar{
		{Name: contract.EnvRunName, Value: run.Name},
		{Name: contract.EnvRunUID, Value: string(run.UID)},
	}
	env = append(env, workspaceEnv(&spec.Workspace)...)
	if stage == alignv1.StageExport {
		env = append(env, outputEnv(spec.Output)...)
	}
	// label scores pairs and eval scores outputs with the same annotator.
	scores := stage == alignv1.StageLabel || stage == alignv1.StageEval
	if a := spec.Labeler.Annotator; scores && a != nil && a.Kind.IsRemote() && a.SecretRef != nil {
		env = append(env, corev1.EnvVar{Name: contract.EnvAnnotatorToken, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: a.SecretRef.DeepCopy()}})
	}
	if j := spec.Evaluator.Judge; stage == alignv1.StageEval && j != nil && j.Kind.IsRemote() && j.SecretRef != nil {
		env = append(env, corev1.EnvVar{Name: contract.EnvEvaluatorToken, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: j.SecretRef.DeepCopy()}})
	}
	if e := spec.Sampler.Engine; stage == alignv1.StageSample && e != nil && e.Kind == alignv1.SamplerEngineOpenAI && e.SecretRef != nil {
		env = append(env, corev1.EnvVar{Name: contract.EnvSamplerToken, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: e.SecretRef.DeepCopy()}})
	}
	if r.ProgressURL != "" {
		env = append(env, progressEnv(r.ProgressURL)...)
	}
	for _, e := range tmpl.Env {
		env = append(env, *e.DeepCopy())
	}

	image := tmpl.Image
	if image == "" {
		image = r.StageImage
	}
	pullPolicy := tmpl.ImagePullPolicy
	if pullPolicy == "" {
		pullPolicy = r.StageImagePullPolicy
	}

	// /etc/bpo: run.yaml from the spec ConfigMap, plus data/<key> from spec.data.configMap.
	sources := []corev1.VolumeProjection{{ConfigMap: &corev1.ConfigMapProjection{
		LocalObjectReference: corev1.LocalObjectReference{Name: ConfigMapName(run.Name)},
		Items:                []corev1.KeyToPath{{Key: contract.RunConfigKey, Path: contract.RunConfigKey}},
	}}}
	if cm := spec.Data.ConfigMap; cm != nil {
		sources = append(sources, corev1.VolumeProjection{ConfigMap: &corev1.ConfigMapProjection{
			LocalObjectReference: corev1.LocalObjectReference{Name: cm.Name},
			Items: []corev1.KeyToPath{
				{Key: cm.PromptsKey, Path: contract.DataDirName + "/" + cm.PromptsKey},
				{Key: cm.EvalKey, Path: contract.DataDirName + "/" + cm.EvalKey},
			},
		}})
	}
	volumes := []corev1.Volume{{
		Name:         "config",
		VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: sources}},
	}}
	mounts := []corev1.VolumeMount{{Name: "config", MountPath: contract.ConfigMountPath, ReadOnly: true}}
	// The root filesystem is read-only; /tmp is the one scratch place a stage (or a library it
	// loads) may write outside the workspace.
	volumes = append(volumes, corev1.Volume{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
	mounts = append(mounts, corev1.VolumeMount{Name: "tmp", MountPath: "/tmp"})
	if v, m, ok := modelImageVolume(&spec.Model); ok {
		volumes, mounts = append(volumes, v), append(mounts, m)
	}
	if v, m, ok := workspaceVolume(&spec.Workspace); ok {
		volumes, mounts = append(volumes, v), append(mounts, m)
	}
	serviceAccount := ""
	if r.ProgressURL != "" {
		v, m := progressTokenVolume()
		volumes, mounts = append(volumes, v), append(mounts, m)
		// A projected token names its service account: the namespace's default, which the
		// API server's admission would pick anyway. It grants nothing (no API token is mounted).
		serviceAccount = "default"
	}

	var tolerations []corev1.Toleration
	for _, t := range tmpl.Tolerations {
		tolerations = append(tolerations, *t.DeepCopy())
	}
	var nodeSelector map[string]string
	if len(tmpl.NodeSelector) > 0 {
		nodeSelector = map[string]string{}
		for k, v := range tmpl.NodeSelector {
			nodeSelector[k] = v
		}
	}

	// Queued with Kueue: the Job carries the run's queue labels and starts suspended; Kueue
	// unsuspends it on admission (the controller never touches spec.suspend of a Job again).
	var suspend *bool
	for _, l := range []string{alignv1.LabelKueueQueueName, alignv1.LabelKueuePriorityClass} {
		if v := run.Labels[l]; v != "" {
			labels[l] = v
		}
	}
	if labels[alignv1.LabelKueueQueueName] != "" {
		suspend = ptr.To(true)
	}

	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{
			Name:      JobName(run.Name, k, stage, attempt),
			Namespace: run.Namespace,
			Labels:    labels,
		},
		Spec: batchv1.JobSpec{
			Suspend: suspend,
			// spec.<stage>.activeDeadlineSeconds bounds each attempt; the Job controller stops
			// the pods and fails the Job with reason DeadlineExceeded (deadlineMessage).
			ActiveDeadlineSeconds: copyInt64(tmpl.ActiveDeadlineSeconds),
			CompletionMode:        ptr.To(batchv1.IndexedCompletion),
			Completions:           ptr.To(completions),
			Parallelism:           ptr.To(completions),
			// Retries are stage-level attempts (new Jobs), counted against spec.backoffLimit.
			BackoffLimit: ptr.To(int32(0)),
			// A pod evicted by a node drain, a preemption or the taint manager (condition
			// DisruptionTarget) is not the stage's failure: the Job replaces the pod without
			// spending an attempt (stages are idempotent, a replaced shard just runs again).
			PodFailurePolicy: &batchv1.PodFailurePolicy{Rules: []batchv1.PodFailurePolicyRule{{
				Action: batchv1.PodFailurePolicyActionIgnore,
				OnPodConditions: []batchv1.PodFailurePolicyOnPodConditionsPattern{{
					Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue,
				}},
			}}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: podLabels},
				Spec: corev1.PodSpec{
					RestartPolicy:                corev1.RestartPolicyNever,
					ServiceAccountName:           serviceAccount,
					AutomountServiceAccountToken: ptr.To(false),
					EnableServiceLinks:           ptr.To(false),
					NodeSelector:                 nodeSelector,
					Tolerations:                  tolerations,
					SecurityContext: &corev1.PodSecurityContext{
						RunAsNonRoot:        ptr.To(true),
						FSGroup:             ptr.To(int64(stagePodFSGroup)),
						FSGroupChangePolicy: ptr.To(corev1.FSGroupChangeOnRootMismatch),
						SeccompProfile:      &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					Volumes: volumes,
					Containers: []corev1.Container{{
						Name:                     containerName,
						Image:                    image,
						ImagePullPolicy:          pullPolicy,
						Command:                  command,
						Args:                     args,
						Env:                      env,
						Resources:                stageResources(tmpl.Resources, r.StageResources),
						VolumeMounts:             mounts,
						TerminationMessagePath:   contract.TerminationLogPath,
						TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
						SecurityContext: &corev1.SecurityContext{
							AllowPrivilegeEscalation: ptr.To(false),
							ReadOnlyRootFilesystem:   ptr.To(true),
							RunAsNonRoot:             ptr.To(true),
							Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
							SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
						},
					}},
				},
			},
		},
	}
}

func copyInt64(p *int64) *int64 {
	if p == nil {
		return nil
	}
	return ptr.To(*p)
}
