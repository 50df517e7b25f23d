package chart

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/bpo-dev/bpo/controllers/testutil"
)

// The server tests run against one envtest control plane (etcd + kube-apiserver from
// KUBEBUILDER_ASSETS), started on first use and stopped by TestMain.

var server struct {
	once sync.Once
	env  *envtest.Environment
	cfg  *rest.Config
	c    client.Client
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	removeBuilds()
	if server.env != nil {
		if err := server.env.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "chart: stopping envtest: %v\n", err)
		}
	}
	os.Exit(code)
}

// apiServer starts (once) and returns the envtest API server's client.
func apiServer(t *testing.T) client.Client {
	t.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		need(t, "KUBEBUILDER_ASSETS is unset: export KUBEBUILDER_ASSETS=$(hack/k8s-binaries.sh --only envtest | tail -1)")
	}
	server.once.Do(func() {
		env, cfg, err := testutil.StartEnvtest(func() *envtest.Environment { return &envtest.Environment{} }, 3)
		if err != nil {
			server.err = fmt.Errorf("starting envtest: %w", err)
			return
		}
		server.env, server.cfg = env, cfg
		cfg.QPS, cfg.Burst = 200, 400
		server.c, server.err = client.New(cfg, client.Options{})
	})
	if server.err != nil {
		t.Fatal(server.err)
	}
	return server.c
}

// kubeconfig writes an admin kubeconfig for the envtest server (for helm and kubectl).
func kubeconfig(t *testing.T) string {
	t.Helper()
	apiServer(t)
	user, err := server.env.AddUser(envtest.User{Name: "chart-test-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	data, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func ensureNamespace(ctx context.Context, c client.Client, name string, labels map[string]string) error {
	ns := &unstructured.Unstructured{}
	ns.SetAPIVersion("v1")
	ns.SetKind("Namespace")
	ns.SetName(name)
	ns.SetLabels(labels)
	if err := c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}

// installCRD creates a CRD for real (unless it exists) and waits until it is established.
func installCRD(ctx context.Context, c client.Client, crd *unstructured.Unstructured) error {
	if err := c.Create(ctx, crd.DeepCopy()); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return waitEstablished(ctx, c, crd.GetName())
}

func waitEstablished(ctx context.Context, c client.Client, name string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := &unstructured.Unstructured{}
		got.SetAPIVersion("apiextensions.k8s.io/v1")
		got.SetKind("CustomResourceDefinition")
		err := c.Get(ctx, types.NamespacedName{Name: name}, got)
		if err == nil {
			conds, _ := field(got.Object, "status", "conditions").([]any)
			for _, cond := range conds {
				if m := mapOf(cond); str(m["type"]) == "Established" && str(m["status"]) == "True" {
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("CRD %s not established after 30s (last error %v)", name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// dryRun submits obj with server-side dry-run and strict field validation: a create, or an
// update of the live object when it already exists. Nothing is persisted.
func dryRun(ctx context.Context, c client.Client, obj *unstructured.Unstructured) error {
	var err error
	for range 5 {
		err = c.Create(ctx, obj.DeepCopy(), client.DryRunAll, client.FieldValidation("Strict"))
		if !apierrors.IsAlreadyExists(err) {
			return err
		}
		// The object exists (another parallel test installed it) and may be changing under us, e.g.
		// a CRD whose status the apiextensions controllers are still writing: retry on conflict.
		err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
			live := &unstructured.Unstructured{}
			live.SetGroupVersionKind(obj.GroupVersionKind())
			if err := c.Get(ctx, client.ObjectKeyFromObject(obj), live); err != nil {
				return err
			}
			upd := obj.DeepCopy()
			upd.SetResourceVersion(live.GetResourceVersion())
			return c.Update(ctx, upd, client.DryRunAll, client.FieldValidation("Strict"))
		})
		if !apierrors.IsNotFound(err) {
			return err
		}
		// ... and the parallel test uninstalled it between our Create and Get: create again.
	}
	return err
}

// kindOrder: CRDs, then namespaces, then the rest (as kubectl and helm order them).
func kindOrder(kind string) int {
	switch kind {
	case "CustomResourceDefinition":
		return 0
	case "Namespace":
		return 1
	case "ServiceAccount", "ClusterRole", "Role":
		return 2
	case "ClusterRoleBinding", "RoleBinding":
		return 3
	default:
		return 4
	}
}

const psaNamespace = "psa-restricted"

// dryRunAll server-side dry-runs every object (namespaces of namespaced objects are created
// for real), and every Deployment's pod template as a Pod in a namespace that enforces the
// "restricted" Pod Security Standard.
func dryRunAll(t *testing.T, objs objects) {
	t.Helper()
	ctx := context.Background()
	c := apiServer(t)
	sorted := append(objects(nil), objs...)
	sort.SliceStable(sorted, func(i, j int) bool { return kindOrder(sorted[i].GetKind()) < kindOrder(sorted[j].GetKind()) })

	for _, u := range sorted {
		if u.GetKind() == "ServiceMonitor" {
			sm := readManifests(t, filepath.Join("testdata", "servicemonitor-crd.yaml")).one(t, "CustomResourceDefinition")
			if err := installCRD(ctx, c, sm); err != nil {
				t.Fatalf("installing the ServiceMonitor test CRD: %v", err)
			}
		}
		if ns := u.GetNamespace(); ns != "" {
			if err := ensureNamespace(ctx, c, ns, nil); err != nil {
				t.Fatalf("namespace %s: %v", ns, err)
			}
		}
		if err := dryRun(ctx, c, u); err != nil {
			t.Errorf("server-side dry-run of %s %s/%s: %v", u.GetKind(), u.GetNamespace(), u.GetName(), err)
		}
	}

	if err := ensureNamespace(ctx, c, psaNamespace, map[string]string{
		"pod-security.kubernetes.io/enforce":         "restricted",
		"pod-security.kubernetes.io/enforce-version": "latest",
	}); err != nil {
		t.Fatal(err)
	}
	for _, dep := range objs.ofKind("Deployment") {
		pod := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "v1",
			"kind":       "Pod",
			"metadata": map[string]any{
				"generateName": dep.GetName() + "-",
				"namespace":    psaNamespace,
				"labels":       field(dep.Object, "spec", "template", "metadata", "labels"),
			},
			"spec": field(dep.Object, "spec", "template", "spec"),
		}}
		if err := c.Create(ctx, pod, client.DryRunAll, client.FieldValidation("Strict")); err != nil {
			t.Errorf("the pod of Deployment %s is rejected in a namespace enforcing the restricted Pod Security Standard: %v", dep.GetName(), err)
		}
	}
}

// TestChartServerDryRun: every object of every matrix case passes server-side dry-run with
// strict field validation on a real kube-apiserver (CRD schema and CEL compilation, RBAC
// escalation checks, Deployment validation, the restricted Pod Security Standard).
func TestChartServerDryRun(t *testing.T) {
	t.Parallel()
	apiServer(t)
	for _, c := range matrix {
		t.Run(c.name, func(t *testing.T) {
			dryRunAll(t, render(t, c.args))
		})
	}
}

// TestKustomizeServerDryRun: `kubectl kustomize config/default` (what `kubectl apply -k
// config/default` installs, docs/deploy.md) passes the same server-side checks.
func TestKustomizeServerDryRun(t *testing.T) {
	t.Parallel()
	apiServer(t)
	kubectl := filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl")
	if !isExecutable(kubectl) {
		p, err := exec.LookPath("kubectl")
		if err != nil {
			need(t, "no kubectl in KUBEBUILDER_ASSETS or PATH")
		}
		kubectl = p
	}
	cmd := exec.Command(kubectl, "kustomize", filepath.Join(repoRoot, "config", "default"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl kustomize config/default: %v\n%s", err, stderr.String())
	}
	objs, err := parseManifests(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs.ofKind("Deployment")) != 1 || len(objs.ofKind("CustomResourceDefinition")) == 0 {
		t.Fatalf("config/default renders %s", objs)
	}
	dryRunAll(t, objs)
}

// TestHelmInstallUpgradeUninstall installs the chart into the envtest API server, checks the
// GitOps contract of the installed CRD (lifecycle and scheduling fields change; recipe changes
// are rejected with the message docs/gitops.md quotes), switches to namespaced RBAC with
// helm upgrade, uninstalls (the CRD and the runs stay: crds.keep) and installs again.
func TestHelmInstallUpgradeUninstall(t *testing.T) {
	t.Parallel()
	c := apiServer(t)
	kc := kubeconfig(t)
	ctx := context.Background()
	const ns, runNS = "bpo-helm", "team-x"
	helm := func(args ...string) string {
		t.Helper()
		out, err := runHelm(t, append(args, "--kubeconfig", kc)...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}

	out := helm("install", releaseName, chartDir, "--namespace", ns, "--create-namespace")
	for _, want := range []string{"STATUS: deployed", "get ar -w", "config/samples", "kubectl explain alignmentrun.spec"} {
		if !strings.Contains(out, want) {
			t.Errorf("helm install output (NOTES) lacks %q:\n%s", want, out)
		}
	}
	if err := waitEstablished(ctx, c, "alignmentruns.alignment.bpo.dev"); err != nil {
		t.Fatal(err)
	}
	dep := getObj(t, c, "apps/v1", "Deployment", ns, "bpo-operator")
	if dep == nil {
		t.Fatal("no Deployment after helm install")
	}

	// The GitOps contract, on the CRD helm installed.
	if err := ensureNamespace(ctx, c, runNS, nil); err != nil {
		t.Fatal(err)
	}
	checkGitOpsContract(t, c, runNS)

	// Namespaced RBAC: the ClusterRole goes, a Role appears in team-x.
	helm("upgrade", releaseName, chartDir, "--namespace", ns, "--set", "rbac.namespaced=true", "--set", "watchNamespaces={"+runNS+"}")
	if getObj(t, c, "rbac.authorization.k8s.io/v1", "ClusterRole", "", "bpo-operator-manager") != nil {
		t.Errorf("ClusterRole bpo-operator-manager still exists after the upgrade to rbac.namespaced")
	}
	if getObj(t, c, "rbac.authorization.k8s.io/v1", "Role", runNS, "bpo-operator-manager") == nil {
		t.Errorf("no Role bpo-operator-manager in %s after the upgrade", runNS)
	}
	dep = getObj(t, c, "apps/v1", "Deployment", ns, "bpo-operator")
	if args := strList(field(dep.Object, "spec", "template", "spec", "containers", "[0]", "args")); !contains(args, "--watch-namespaces="+runNS) {
		t.Errorf("Deployment args after the upgrade: %v", args)
	}

	// Uninstall keeps the CRD and therefore the run.
	helm("uninstall", releaseName, "--namespace", ns)
	if getObj(t, c, "apps/v1", "Deployment", ns, "bpo-operator") != nil {
		t.Errorf("the Deployment survived helm uninstall")
	}
	if getObj(t, c, "apiextensions.k8s.io/v1", "CustomResourceDefinition", "", "alignmentruns.alignment.bpo.dev") == nil {
		t.Fatalf("helm uninstall deleted the CRD despite crds.keep")
	}
	quickstart := readManifests(t, filepath.Join(repoRoot, "config", "samples", "quickstart.yaml")).one(t, "AlignmentRun")
	if getObj(t, c, "alignment.bpo.dev/v1alpha1", "AlignmentRun", runNS, quickstart.GetName()) == nil {
		t.Errorf("the AlignmentRun is gone after helm uninstall")
	}

	// A new install adopts the kept CRD.
	helm("install", releaseName, chartDir, "--namespace", ns)
	helm("uninstall", releaseName, "--namespace", ns)
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

// getObj returns the live object or nil when it does not exist.
func getObj(t *testing.T, c client.Client, apiVersion, kind, namespace, name string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetAPIVersion(apiVersion)
	u.SetKind(kind)
	err := c.Get(context.Background(), types.NamespacedName{Namespace: namespace, Name: name}, u)
	if apierrors.IsNotFound(err) || meta.IsNoMatchError(err) {
		return nil
	}
	if err != nil {
		t.Fatalf("get %s %s/%s: %v", kind, namespace, name, err)
	}
	if u.GetDeletionTimestamp() != nil {
		return nil
	}
	return u
}

// checkGitOpsContract creates the quickstart sample and changes its spec the way a GitOps
// commit would: lifecycle and scheduling fields are accepted (and bump metadata.generation,
// which the health checks compare with status.observedGeneration); recipe fields are rejected
// with a message docs/gitops.md quotes.
func checkGitOpsContract(t *testing.T, c client.Client, ns string) {
	t.Helper()
	ctx := context.Background()
	run := readManifests(t, filepath.Join(repoRoot, "config", "samples", "quickstart.yaml")).one(t, "AlignmentRun")
	run.SetNamespace(ns)
	if err := c.Create(ctx, run); err != nil {
		t.Fatalf("creating the sample run: %v", err)
	}
	gen := run.GetGeneration()
	doc, err := os.ReadFile(filepath.Join(repoRoot, "docs", "gitops.md"))
	if err != nil {
		t.Fatal(err)
	}

	patch := func(p string) error {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(schema.GroupVersionKind{Group: "alignment.bpo.dev", Version: "v1alpha1", Kind: "AlignmentRun"})
		u.SetNamespace(ns)
		u.SetName(run.GetName())
		return c.Patch(ctx, u, client.RawPatch(types.MergePatchType, []byte(p)))
	}
	for _, p := range []string{
		`{"spec":{"suspend":true}}`,
		`{"spec":{"activeDeadlineSeconds":7200,"backoffLimit":4,"ttlSecondsAfterFinished":600}}`,
		`{"spec":{"sampler":{"parallelism":4,"nodeSelector":{"pool":"cpu"},"image":"registry.example.com/bpo:v2"}}}`,
		`{"spec":{"trainer":{"resources":{"requests":{"cpu":"2","memory":"2Gi"}},"tolerations":[{"key":"gpu","operator":"Exists"}],"env":[{"name":"A","value":"b"}]}}}`,
		`{"spec":{"labeler":{"parallelism":2},"evaluator":{"args":["--verbose"]}}}`,
		`{"spec":{"suspend":false}}`,
	} {
		if err := patch(p); err != nil {
			t.Errorf("mutable change %s rejected: %v", p, err)
		}
	}
	live := getObj(t, c, "alignment.bpo.dev/v1alpha1", "AlignmentRun", ns, run.GetName())
	if live.GetGeneration() <= gen {
		t.Errorf("metadata.generation %d did not move from %d on spec changes", live.GetGeneration(), gen)
	}

	for p, want := range map[string]string{
		`{"spec":{"loss":{"beta":"0.2"}}}`:               "spec.loss is immutable: create a new AlignmentRun to change the recipe",
		`{"spec":{"budget":{"pairs":1024}}}`:             "spec.budget is immutable: create a new AlignmentRun to change the recipe",
		`{"spec":{"sampler":{"temperature":"0.7"}}}`:     "spec.sampler.temperature is immutable: create a new AlignmentRun to change the recipe",
		`{"spec":{"trainer":{"learningRate":"1e-4"}}}`:   "spec.trainer.learningRate is immutable: create a new AlignmentRun to change the recipe",
		`{"spec":{"workspace":{"subPath":"elsewhere"}}}`: "spec.workspace is immutable: create a new AlignmentRun to change the recipe",
	} {
		err := patch(p)
		if err == nil {
			t.Errorf("recipe change %s was accepted", p)
			continue
		}
		if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), want) {
			t.Errorf("recipe change %s: %v\nwant an Invalid error with %q", p, err, want)
		}
	}
	// The run the Argo Workflows example of docs/gitops.md creates is accepted (schema and CEL).
	for _, u := range argoWorkflowCreatedRuns(t, ns) {
		if err := dryRun(ctx, c, u); err != nil {
			t.Errorf("server-side dry-run of the AlignmentRun the docs' Workflow creates: %v", err)
		}
	}

	// The documentation quotes the server's exact wording (what kubectl prints after "is invalid: ").
	err = patch(`{"spec":{"loss":{"beta":"0.2"}}}`)
	_, detail, ok := strings.Cut(fmt.Sprint(err), "is invalid: ")
	if !ok {
		t.Fatalf("unexpected error form: %v", err)
	}
	if !bytes.Contains(doc, []byte(detail)) {
		t.Errorf("docs/gitops.md does not quote the server's rejection %q", detail)
	}
}
