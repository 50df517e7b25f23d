package controllers

import (
	"context"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/bpo-dev/bpo/controllers/testutil"
)

// TestExplicitZeros: through the API server (a manifest as kubectl sends it, not a Go struct whose
// zero fields are omitted), `phases: 0` and `members: 0` are rejected naming the field and its
// minimum, and `seed: 0` is stored as 0 and reaches the stage pods' run.yaml as 0, not as the
// default seed 1.
func TestExplicitZeros(t *testing.T) {
	requireEnv(t)
	t.Parallel()
	ns := newNamespace(t, "zeros")
	manifest := func(name string, v int64, path ...string) *unstructured.Unstructured {
		t.Helper()
		obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(testutil.MakeRun(ns, name).Obj())
		must(t, err)
		delete(obj, "status")
		u := &unstructured.Unstructured{Object: obj}
		must(t, unstructured.SetNestedField(u.Object, v, append([]string{"spec"}, path...)...))
		return u
	}
	for name, path := range map[string][]string{"phases": {"trustRegion", "phases"}, "members": {"ensemble", "members"}} {
		err := k8sClient.Create(context.Background(), manifest("zero-"+name, 0, path...))
		want := "spec." + strings.Join(path, ".") + ": Invalid value: 0: spec." + strings.Join(path, ".") + " in body should be greater than or equal to 1"
		if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: 0: %v\nwant an Invalid error containing %q", name, err, want)
		}
	}

	must(t, k8sClient.Create(context.Background(), manifest("seed-zero", 0, "seed")))
	stored := getRun(t, ns, "seed-zero")
	if stored.Spec.Seed == nil || *stored.Spec.Seed != 0 {
		t.Fatalf("seed: 0 stored as %v", stored.Spec.Seed)
	}
	doc, err := renderRunYAML(stored)
	must(t, err)
	if !strings.Contains(doc, "\n  seed: 0\n") {
		t.Errorf("run.yaml of a run with seed 0 does not say so:\n%s", doc)
	}
}
