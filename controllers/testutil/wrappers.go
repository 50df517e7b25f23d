// Package testutil has typed builders for AlignmentRun test objects (in the style of JobSet's
// and Kubeflow Trainer's testing wrappers) and the table of invalid specs shared by the API
// server test and the Go Validate test.
package testutil

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	alignv1 "github.com/bpo-dev/bpo/api/v1alpha1"
)

// RunWrapper builds an AlignmentRun.
type RunWrapper struct{ alignv1.AlignmentRun }

// MakeRun returns a small valid run: builtin model tiny-reviews and task reviews, 64 pairs in
// F = 2 phases of 16-pair steps, 2 ensemble members, workspace PVC "workspace", and no baseline
// (so no report either: the walk is phases 1..F, and tests that drive it name fewer Jobs;
// Baseline(true) gives the default walk). Other fields are left to the schema defaults (call
// Defaulted for the Go equivalent).
func MakeRun(ns, name string) *RunWrapper {
	return &RunWrapper{alignv1.AlignmentRun{
		TypeMeta:   metav1.TypeMeta{APIVersion: alignv1.GroupVersion.String(), Kind: "AlignmentRun"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: alignv1.AlignmentRunSpec{
			Model:       alignv1.ModelSpec{Builtin: "tiny-reviews"},
			TrustRegion: alignv1.TrustRegionSpec{Phases: 2},
			Budget:      alignv1.BudgetSpec{Pairs: 64, PairsPerStep: 16},
			Ensemble:    alignv1.EnsembleSpec{Members: 2},
			Data:        alignv1.DataSpec{Builtin: "reviews"},
			Evaluator:   alignv1.EvaluatorSpec{Baseline: ptr.To(false)},
			Workspace: alignv1.WorkspaceSpec{
				PersistentVolumeClaim: &alignv1.WorkspacePVC{ClaimName: "workspace"},
				SubPath:               "runs",
			},
		},
	}}
}

// Obj returns a copy of the built object.
func (w *RunWrapper) Obj() *alignv1.AlignmentRun { return w.AlignmentRun.DeepCopy() }

// Defaulted returns a copy with the schema defaults applied in Go (SetDefaults).
func (w *RunWrapper) Defaulted() *alignv1.AlignmentRun {
	r := w.Obj()
	r.SetDefaults()
	return r
}

// Phases sets spec.trustRegion.phases.
func (w *RunWrapper) Phases(f int32) *RunWrapper { w.Spec.TrustRegion.Phases = f; return w }

// Members sets spec.ensemble.members.
func (w *RunWrapper) Members(n int32) *RunWrapper { w.Spec.Ensemble.Members = n; return w }

// Pairs sets spec.budget.pairs and pairsPerStep.
func (w *RunWrapper) Pairs(pairs, perStep int32) *RunWrapper {
	w.Spec.Budget.Pairs, w.Spec.Budget.PairsPerStep = pairs, perStep
	return w
}

// Loss sets spec.loss.type and beta.
func (w *RunWrapper) Loss(t alignv1.LossType, beta string) *RunWrapper {
	w.Spec.Loss.Type, w.Spec.Loss.Beta = t, alignv1.Decimal(beta)
	return w
}

// Reference sets spec.trustRegion.reference.
func (w *RunWrapper) Reference(r alignv1.ReferenceType) *RunWrapper {
	w.Spec.TrustRegion.Reference = r
	return w
}

// EMA sets reference EMA with the given alpha.
func (w *RunWrapper) EMA(alpha string) *RunWrapper {
	w.Spec.TrustRegion.Reference = alignv1.ReferenceEMA
	w.Spec.TrustRegion.EMAAlpha = ptr.To(alignv1.Decimal(alpha))
	return w
}

// SamplerParallelism sets spec.sampler.parallelism.
func (w *RunWrapper) SamplerParallelism(n int32) *RunWrapper {
	w.Spec.Sampler.Parallelism = ptr.To(n)
	return w
}

// LabelerParallelism sets spec.labeler.parallelism.
func (w *RunWrapper) LabelerParallelism(n int32) *RunWrapper {
	w.Spec.Labeler.Parallelism = ptr.To(n)
	return w
}

// EvalEveryPhase sets spec.evaluator.everyPhase.
func (w *RunWrapper) EvalEveryPhase(b bool) *RunWrapper { w.Spec.Evaluator.EveryPhase = b; return w }

// Baseline sets spec.evaluator.baseline (true: the default walk, with the phase-0 baseline eval
// and the report stage after the last phase).
func (w *RunWrapper) Baseline(b bool) *RunWrapper { w.Spec.Evaluator.Baseline = ptr.To(b); return w }

// BackoffLimit sets spec.backoffLimit.
func (w *RunWrapper) BackoffLimit(n int32) *RunWrapper { w.Spec.BackoffLimit = ptr.To(n); return w }

// Suspend sets spec.suspend.
func (w *RunWrapper) Suspend(b bool) *RunWrapper { w.Spec.Suspend = ptr.To(b); return w }

// ActiveDeadlineSeconds sets spec.activeDeadlineSeconds.
func (w *RunWrapper) ActiveDeadlineSeconds(s int64) *RunWrapper {
	w.Spec.ActiveDeadlineSeconds = ptr.To(s)
	return w
}

// TTLSecondsAfterFinished sets spec.ttlSecondsAfterFinished.
func (w *RunWrapper) TTLSecondsAfterFinished(s int32) *RunWrapper {
	w.Spec.TTLSecondsAfterFinished = ptr.To(s)
	return w
}

// TrainerImage sets spec.trainer.image.
func (w *RunWrapper) TrainerImage(img string) *RunWrapper { w.Spec.Trainer.Image = img; return w }

// TrainerResources sets spec.trainer.resources requests.
func (w *RunWrapper) TrainerResources(rl corev1.ResourceList) *RunWrapper {
	w.Spec.Trainer.Resources.Requests = rl
	return w
}

// SamplerEnv appends an environment variable to the sampler.
func (w *RunWrapper) SamplerEnv(name, value string) *RunWrapper {
	w.Spec.Sampler.Env = append(w.Spec.Sampler.Env, corev1.EnvVar{Name: name, Value: value})
	return w
}

// SamplerTolerations sets the sampler's tolerations.
func (w *RunWrapper) SamplerTolerations(t ...corev1.Toleration) *RunWrapper {
	w.Spec.Sampler.Tolerations = t
	return w
}

// SamplerNodeSelector sets the sampler's node selector.
func (w *RunWrapper) SamplerNodeSelector(m map[string]string) *RunWrapper {
	w.Spec.Sampler.NodeSelector = m
	return w
}

// DataConfigMap makes spec.data a ConfigMap source.
func (w *RunWrapper) DataConfigMap(name string) *RunWrapper {
	w.Spec.Data = alignv1.DataSpec{ConfigMap: &alignv1.ConfigMapDataSource{Name: name}}
	return w
}

// HTTPAnnotator makes the labeler's annotator an HTTP service with a Secret key.
func (w *RunWrapper) HTTPAnnotator(url, secret, key string) *RunWrapper {
	w.Spec.Labeler.Annotator = &alignv1.AnnotatorSpec{
		Kind: alignv1.AnnotatorHTTP, URL: url,
		SecretRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: secret}, Key: key},
	}
	return w
}

// Mutate applies an arbitrary change.
func (w *RunWrapper) Mutate(f func(*alignv1.AlignmentRun)) *RunWrapper { f(&w.AlignmentRun); return w }

// Label sets a label on the run (e.g. kueue.x-k8s.io/queue-name).
func (w *RunWrapper) Label(k, v string) *RunWrapper {
	if w.Labels == nil {
		w.Labels = map[string]string{}
	}
	w.Labels[k] = v
	return w
}
