package controllers

import (
	"context"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	alignv1 "github.com/bpo-dev/bpo/api/v1alpha1"
)

// fakeRun is a reconciler over a fake client holding one run, whose status writes conflict while
// conflict is set: the small unit harness of the tests about what a conflicting status write
// must not lose or repeat (events, retries, metrics).
type fakeRun struct {
	c        client.Client
	r        *AlignmentRunReconciler
	rec      *events.FakeRecorder
	req      ctrl.Request
	conflict bool
}

func newFakeRun(t *testing.T, run *alignv1.AlignmentRun) *fakeRun {
	t.Helper()
	f := &fakeRun{rec: events.NewFakeRecorder(100), req: ctrl.Request{NamespacedName: types.NamespacedName{Namespace: run.Namespace, Name: run.Name}}}
	f.c = fake.NewClientBuilder().WithScheme(scheme).WithObjects(run).WithStatusSubresource(run, &batchv1.Job{}).
		WithInterceptorFuncs(interceptor.Funcs{
			SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
				if _, isRun := obj.(*alignv1.AlignmentRun); isRun && f.conflict {
					return apierrors.NewConflict(schema.GroupResource{Group: "alignment.bpo.dev", Resource: "alignmentruns"}, obj.GetName(), nil)
				}
				return c.SubResource(sub).Patch(ctx, obj, patch, opts...)
			},
		}).Build()
	f.r = &AlignmentRunReconciler{Client: f.c, Scheme: scheme, Recorder: f.rec, StageImage: DefaultStageImage}
	return f
}

// reconcile runs one reconcile and fails the test on an error.
func (f *fakeRun) reconcile(t *testing.T) {
	t.Helper()
	if _, err := f.r.Reconcile(context.Background(), f.req); err != nil {
		t.Fatal(err)
	}
}
