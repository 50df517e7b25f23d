package controllers

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	alignv1 "github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/controllers/testutil"
)

// TestLeastPrivilegeRBAC runs the controller as a user holding only the checked-in RBAC
// (config/rbac/role.yaml, generated from the +kubebuilder:rbac markers, and the
// leader-election Role), with leader election on: a missing verb would stall the run.
func TestLeastPrivilegeRBAC(t *testing.T) {
	requireEnv(t)
	t.Parallel()
	ctx := context.Background()
	ns := newNamespace(t, "rbac")
	user := "bpo-manager-" + ns

	read := func(name string, into any) {
		b, err := os.ReadFile(filepath.Join("..", "config", "rbac", name))
		must(t, err)
		must(t, yaml.UnmarshalStrict(b, into))
	}
	role := &rbacv1.ClusterRole{}
	read("role.yaml", role)
	role.Name = user // one ClusterRole per test run; cluster-scoped
	must(t, k8sClient.Create(ctx, role))
	t.Cleanup(func() { _ = k8sClient.Delete(ctx, role) })
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: user},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
	}
	must(t, k8sClient.Create(ctx, crb))
	t.Cleanup(func() { _ = k8sClient.Delete(ctx, crb) })
	le := &rbacv1.Role{}
	read("leader_election_role.yaml", le)
	le.Namespace = ns
	must(t, k8sClient.Create(ctx, le))
	must(t, k8sClient.Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "leader-election", Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: le.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
	}))

	authn, err := testEnv.AddUser(envtest.User{Name: user}, cfg)
	must(t, err)
	restCfg := authn.Config()
	startManagerWith(t, restCfg, ctrl.Options{
		LeaderElection:          true,
		LeaderElectionID:        "alignment.bpo.dev",
		LeaderElectionNamespace: ns,
		LeaseDuration:           ptrDuration(4 * time.Second),
		RenewDeadline:           ptrDuration(3 * time.Second),
		RetryPeriod:             ptrDuration(500 * time.Millisecond),
	}, ns)

	run := createRun(t, testutil.MakeRun(ns, "rbac").Phases(1).Members(1).Obj())
	for _, name := range stageSequence(run.Name, 1, false, false) {
		succeed(t, ns, name)
	}
	waitCondition(t, ns, run.Name, alignv1.ConditionSucceeded, metav1.ConditionTrue, "")
	waitEvents(t, ns, run.Name, "StageStarted", "Succeeded")
}

func ptrDuration(d time.Duration) *time.Duration { return &d }
