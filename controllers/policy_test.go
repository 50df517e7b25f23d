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

func TestStagePolicy(t *testing.T) {
	const own = "ghcr.io/bpo-dev/bpo:0.1.0"
	secretEnv := corev1.EnvVar{Name: "TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: "db"}, Key: "password"}}}
	cases := []struct {
		name   string
		policy StagePolicy
		mutate func(*alignv1.AlignmentRunSpec)
		want   string // "" = allowed; else a substring of the error
	}{
		{"defaults", StagePolicy{}, func(*alignv1.AlignmentRunSpec) {}, ""},
		{"own image, another tag", StagePolicy{}, func(s *alignv1.AlignmentRunSpec) { s.Trainer.Image = "ghcr.io/bpo-dev/bpo:0.2.0" }, ""},
		{"own image by digest", StagePolicy{}, func(s *alignv1.AlignmentRunSpec) { s.Trainer.Image = "ghcr.io/bpo-dev/bpo@sha256:abc" }, ""},
		{"foreign image", StagePolicy{}, func(s *alignv1.AlignmentRunSpec) { s.Trainer.Image = "evil.example/miner:1" },
			"spec.trainer.image: Forbidden: image \"evil.example/miner:1\""},
		{"look-alike repository", StagePolicy{}, func(s *alignv1.AlignmentRunSpec) { s.Sampler.Image = "ghcr.io/bpo-dev/bpo-evil:1" },
			"spec.sampler.image"},
		{"allowed prefix", StagePolicy{AllowedImages: []string{"registry.team-a.example/"}},
			func(s *alignv1.AlignmentRunSpec) { s.Trainer.Image = "registry.team-a.example/torch-train:1" }, ""},
		{"any image", StagePolicy{AllowedImages: []string{"*"}},
			func(s *alignv1.AlignmentRunSpec) { s.Trainer.Image = "anything:1" }, ""},
		{"command override", StagePolicy{}, func(s *alignv1.AlignmentRunSpec) { s.Evaluator.Command = []string{"sh"} },
			"--allow-stage-command"},
		{"args override", StagePolicy{}, func(s *alignv1.AlignmentRunSpec) { s.Sampler.Args = []string{"--x"} },
			"spec.sampler.command"},
		{"command allowed", StagePolicy{AllowCommand: true}, func(s *alignv1.AlignmentRunSpec) { s.Evaluator.Command = []string{"sh"} }, ""},
		{"secret env", StagePolicy{}, func(s *alignv1.AlignmentRunSpec) { s.Labeler.Env = []corev1.EnvVar{{Name: "A", Value: "1"}, secretEnv} },
			"spec.labeler.env[1]: Forbidden: env TOKEN reads Secret db"},
		{"plain env", StagePolicy{}, func(s *alignv1.AlignmentRunSpec) { s.Labeler.Env = []corev1.EnvVar{{Name: "A", Value: "1"}} }, ""},
		{"secret env allowed", StagePolicy{AllowSecretEnv: true}, func(s *alignv1.AlignmentRunSpec) { s.Labeler.Env = []corev1.EnvVar{secretEnv} }, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			run := testutil.MakeRun("ns", "p").Defaulted()
			tc.mutate(&run.Spec)
			errs := tc.policy.Check(&run.Spec, own)
			got := errs.ToAggregate()
			switch {
			case tc.want == "" && got != nil:
				t.Errorf("refused: %v", got)
			case tc.want != "" && (got == nil || !strings.Contains(got.Error(), tc.want)):
				t.Errorf("error %v, want one containing %q", got, tc.want)
			}
		})
	}
}

// A run the policy forbids fails with PolicyViolation before anything is created.
func TestPolicyViolationFailsRun(t *testing.T) {
	t.Parallel()
	run := testutil.MakeRun("ns", "forbidden").TrainerImage("evil.example/miner:1").Defaulted()
	run.UID = types.UID("uid-forbidden")
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(run).WithStatusSubresource(run).Build()
	r := &AlignmentRunReconciler{Client: c, Scheme: scheme, Recorder: events.NewFakeRecorder(10), StageImage: DefaultStageImage}
	key := types.NamespacedName{Namespace: "ns", Name: "forbidden"}
	if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: key}); err != nil {
		t.Fatal(err)
	}
	got := &alignv1.AlignmentRun{}
	must(t, c.Get(context.Background(), key, got))
	cond := meta.FindStatusCondition(got.Status.Conditions, alignv1.ConditionFailed)
	if cond == nil || cond.Status != metav1.ConditionTrue || cond.Reason != alignv1.ReasonPolicyViolation || !strings.Contains(cond.Message, "spec.trainer.image") {
		t.Fatalf("Failed condition %+v", cond)
	}
	var jobs batchv1.JobList
	must(t, c.List(context.Background(), &jobs))
	if len(jobs.Items) != 0 {
		t.Errorf("%d Jobs created for a forbidden run", len(jobs.Items))
	}
}
