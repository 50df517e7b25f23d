package chart

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// TestHelmLint: `helm lint --strict` with the default values and with the matrix's values.
func TestHelmLint(t *testing.T) {
	t.Parallel()
	for _, c := range matrix {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			args := []string{"lint", "--strict", chartDir, "--namespace", releaseNamespace}
			if c.args.values != "" {
				f := filepath.Join(t.TempDir(), "values.yaml")
				if err := os.WriteFile(f, []byte(c.args.values), 0o644); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--values", f)
			}
			for _, s := range c.args.set {
				args = append(args, "--set", s)
			}
			out, err := runHelm(t, args...)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if strings.Contains(out, "[WARNING]") || strings.Contains(out, "[ERROR]") {
				t.Errorf("helm lint:\n%s", out)
			}
		})
	}
}

// chartCase is one values combination of the matrix; check asserts on the rendered objects.
// Every case is also server-side dry-run against a real API server (TestChartServerDryRun).
type chartCase struct {
	name  string
	args  renderArgs
	check func(t *testing.T, objs objects)
}

var matrix = []chartCase{
	{name: "defaults", check: checkDefaults},
	{
		name: "crds-disabled",
		args: renderArgs{set: []string{"crds.enabled=false"}},
		check: func(t *testing.T, objs objects) {
			if crds := objs.ofKind("CustomResourceDefinition"); len(crds) != 0 {
				t.Errorf("crds.enabled=false rendered %d CRDs", len(crds))
			}
			// The rest of the release is unchanged.
			for _, kind := range []string{"Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service"} {
				if len(objs.ofKind(kind)) == 0 {
					t.Errorf("no %s rendered", kind)
				}
			}
		},
	},
	{
		name: "crds-not-kept",
		args: renderArgs{set: []string{"crds.keep=false"}},
		check: func(t *testing.T, objs objects) {
			crd := objs.one(t, "CustomResourceDefinition")
			for _, key := range []string{"helm.sh/resource-policy", "argocd.argoproj.io/sync-options"} {
				if v, ok := crd.GetAnnotations()[key]; ok {
					t.Errorf("crds.keep=false: the CRD still has %s: %s", key, v)
				}
			}
		},
	},
	{
		name: "namespaced-rbac",
		args: renderArgs{values: "rbac:\n  namespaced: true\nwatchNamespaces: [team-a, team-b]\n"},
		check: func(t *testing.T, objs objects) {
			// Only the metrics endpoint's roles are cluster-wide: TokenReviews and
			// SubjectAccessReviews are cluster-scoped, and /metrics is a non-resource URL.
			for _, u := range append(objs.ofKind("ClusterRole"), objs.ofKind("ClusterRoleBinding")...) {
				if n := u.GetName(); n != "bpo-operator-metrics-auth" && n != "bpo-operator-metrics-reader" {
					t.Errorf("rbac.namespaced rendered the cluster-wide %s %s", u.GetKind(), n)
				}
			}
			if got := managerArgs(t, objs)["--watch-namespaces"]; got != "team-a,team-b" {
				t.Errorf("--watch-namespaces=%q, want team-a,team-b", got)
			}
			sa := serviceAccountName(t, objs)
			want := baseManagerRules(t)
			for _, ns := range []string{"team-a", "team-b"} {
				role := objs.get("Role", ns, "bpo-operator-manager")
				if role == nil {
					t.Fatalf("no Role bpo-operator-manager in %s: %s", ns, objs)
				}
				if got := normalize(t, role.Object["rules"]); !reflect.DeepEqual(got, want) {
					t.Errorf("Role in %s: rules differ from config/rbac/role.yaml:\n got %v\nwant %v", ns, got, want)
				}
				rb := objs.get("RoleBinding", ns, "bpo-operator-manager")
				if rb == nil {
					t.Fatalf("no RoleBinding bpo-operator-manager in %s", ns)
				}
				checkBinding(t, rb, "Role", "bpo-operator-manager", sa)
			}
			// Leader election stays in the release namespace.
			if objs.get("Role", releaseNamespace, "bpo-operator-leader-election") == nil {
				t.Errorf("no leader-election Role in %s", releaseNamespace)
			}
			if n := len(objs.ofKind("Role")); n != 3 {
				t.Errorf("want 3 Roles (2 namespaces + leader election), got %d: %s", n, objs)
			}
		},
	},
	{
		name: "watch-namespaces-cluster-rbac",
		args: renderArgs{set: []string{"watchNamespaces={team-a,team-b,team-a}"}},
		check: func(t *testing.T, objs objects) {
			if got := managerArgs(t, objs)["--watch-namespaces"]; got != "team-a,team-b" {
				t.Errorf("--watch-namespaces=%q, want the de-duplicated team-a,team-b", got)
			}
			if objs.get("ClusterRole", "", "bpo-operator-manager") == nil {
				t.Errorf("no ClusterRole without rbac.namespaced")
			}
		},
	},
	{
		name: "service-monitor",
		args: renderArgs{values: "metrics:\n  serviceMonitor:\n    enabled: true\n    labels: {release: prometheus}\n    interval: 15s\n"},
		check: func(t *testing.T, objs objects) {
			sm := objs.one(t, "ServiceMonitor")
			if sm.GetAPIVersion() != "monitoring.coreos.com/v1" || sm.GetNamespace() != releaseNamespace {
				t.Errorf("ServiceMonitor %s in %q", sm.GetAPIVersion(), sm.GetNamespace())
			}
			if sm.GetLabels()["release"] != "prometheus" {
				t.Errorf("ServiceMonitor labels %v lack release=prometheus", sm.GetLabels())
			}
			svc := metricsService(t, objs)
			sel := mapOf(field(sm.Object, "spec", "selector", "matchLabels"))
			if len(sel) == 0 {
				t.Fatal("ServiceMonitor has no selector")
			}
			for k, v := range sel {
				if svc.GetLabels()[k] != str(v) {
					t.Errorf("ServiceMonitor selects %s=%v, Service has %q", k, v, svc.GetLabels()[k])
				}
			}
			if ns := strList(field(sm.Object, "spec", "namespaceSelector", "matchNames")); !slices.Equal(ns, []string{releaseNamespace}) {
				t.Errorf("namespaceSelector %v", ns)
			}
			ep := mapOf(field(sm.Object, "spec", "endpoints", "[0]"))
			if str(ep["port"]) != str(field(svc.Object, "spec", "ports", "[0]", "name")) || str(ep["path"]) != "/metrics" || str(ep["interval"]) != "15s" {
				t.Errorf("endpoint %v does not scrape Service port %v", ep, field(svc.Object, "spec", "ports", "[0]", "name"))
			}
			// HTTPS with Prometheus's ServiceAccount token; the default certificate is self-signed.
			if str(ep["scheme"]) != "https" || str(ep["bearerTokenFile"]) != "/var/run/secrets/kubernetes.io/serviceaccount/token" ||
				!reflect.DeepEqual(ep["tlsConfig"], map[string]any{"insecureSkipVerify": true}) {
				t.Errorf("endpoint %v: want https, the ServiceAccount bearer token and insecureSkipVerify", ep)
			}
		},
	},
	{
		name: "service-monitor-with-ca",
		args: renderArgs{values: `
metrics:
  certSecret: bpo-metrics-cert
  readerSubjects: [{kind: ServiceAccount, name: prometheus-k8s, namespace: monitoring}]
  serviceMonitor:
    enabled: true
    tlsConfig: {serverName: bpo-operator-metrics.bpo-system.svc, ca: {secret: {name: bpo-metrics-cert, key: ca.crt}}}
`},
		check: func(t *testing.T, objs objects) {
			ep := mapOf(field(objs.one(t, "ServiceMonitor").Object, "spec", "endpoints", "[0]"))
			tls := mapOf(ep["tlsConfig"])
			if str(ep["scheme"]) != "https" || tls["insecureSkipVerify"] != nil || str(field(tls, "ca", "secret", "name")) != "bpo-metrics-cert" ||
				str(tls["serverName"]) != "bpo-operator-metrics.bpo-system.svc" {
				t.Errorf("endpoint %v: want the given CA and serverName, no insecureSkipVerify", ep)
			}
			// The certificate Secret is mounted where --metrics-cert-path points.
			args := managerArgs(t, objs)
			var mountPath string
			for _, m := range field(managerContainer(t, objs), "volumeMounts").([]any) {
				if str(mapOf(m)["name"]) == "metrics-cert" && mapOf(m)["readOnly"] == true {
					mountPath = str(mapOf(m)["mountPath"])
				}
			}
			vol := field(objs.one(t, "Deployment").Object, "spec", "template", "spec", "volumes", "[0]")
			if mountPath == "" || args["--metrics-cert-path"] != mountPath || str(field(mapOf(vol), "secret", "secretName")) != "bpo-metrics-cert" {
				t.Errorf("--metrics-cert-path=%q, mount %q, volume %v", args["--metrics-cert-path"], mountPath, vol)
			}
			// The scraper is bound to the metrics-reader ClusterRole.
			b := objs.get("ClusterRoleBinding", "", "bpo-operator-metrics-reader")
			if b == nil || str(field(b.Object, "roleRef", "name")) != "bpo-operator-metrics-reader" ||
				!reflect.DeepEqual(normalize(t, field(b.Object, "subjects")), normalize(t, []any{map[string]any{"kind": "ServiceAccount", "name": "prometheus-k8s", "namespace": "monitoring"}})) {
				t.Errorf("metrics-reader binding %v", b)
			}
		},
	},
	{
		name: "metrics-insecure",
		args: renderArgs{set: []string{"metrics.secure=false", "metrics.port=8080", "metrics.service.port=8080", "metrics.serviceMonitor.enabled=true", "metrics.certSecret=ignored"}},
		check: func(t *testing.T, objs objects) {
			args := managerArgs(t, objs)
			if args["--metrics-secure"] != "false" || args["--metrics-bind-address"] != ":8080" {
				t.Errorf("args %v", args)
			}
			if _, ok := args["--metrics-cert-path"]; ok {
				t.Errorf("a certificate is passed to a plain-HTTP endpoint")
			}
			ep := mapOf(field(objs.one(t, "ServiceMonitor").Object, "spec", "endpoints", "[0]"))
			if str(ep["scheme"]) != "http" || ep["bearerTokenFile"] != nil || ep["tlsConfig"] != nil {
				t.Errorf("endpoint %v: want plain http without a token", ep)
			}
			for _, u := range objs.ofKind("ClusterRole") {
				if strings.Contains(u.GetName(), "metrics") {
					t.Errorf("metrics.secure=false still renders %s", u.GetName())
				}
			}
		},
	},
	{
		name: "network-policy",
		args: renderArgs{set: []string{"networkPolicy.enabled=true"}},
		check: func(t *testing.T, objs objects) {
			checkNetworkPolicy(t, objs, map[string]any{"alignment.bpo.dev/metrics-scraper": "true"})
		},
	},
	{
		name: "network-policy-custom-label",
		args: renderArgs{values: "networkPolicy:\n  enabled: true\n  scraperLabels: {monitoring.example.com/prometheus: main}\n"},
		check: func(t *testing.T, objs objects) {
			checkNetworkPolicy(t, objs, map[string]any{"monitoring.example.com/prometheus": "main"})
		},
	},
	{
		name: "network-policy-without-metrics",
		args: renderArgs{set: []string{"networkPolicy.enabled=true", "metrics.enabled=false"}},
		check: func(t *testing.T, objs objects) {
			np := objs.one(t, "NetworkPolicy")
			in, ok := field(np.Object, "spec", "ingress").([]any)
			if !ok || len(in) != 1 || str(field(mapOf(in[0]), "ports", "[0]", "port")) != "8082" {
				t.Errorf("without metrics the manager takes only the stage pods' progress: %v", field(np.Object, "spec", "ingress"))
			}
		},
	},
	{
		name: "network-policy-without-metrics-or-progress",
		args: renderArgs{set: []string{"networkPolicy.enabled=true", "metrics.enabled=false", "progress.enabled=false"}},
		check: func(t *testing.T, objs objects) {
			np := objs.one(t, "NetworkPolicy")
			if in, ok := field(np.Object, "spec", "ingress").([]any); !ok || len(in) != 0 {
				t.Errorf("without metrics and progress the manager takes no ingress: %v", field(np.Object, "spec", "ingress"))
			}
			args := managerArgs(t, objs)
			if args["--progress-bind-address"] != "0" || args["--progress-url"] != "" || len(objs.ofKind("Service")) != 0 {
				t.Errorf("progress.enabled=false: args %v, Services %v", args, objs.ofKind("Service"))
			}
		},
	},
	{
		name: "stage-resources",
		args: renderArgs{values: "stageResources:\n  requests: {cpu: 2, memory: 4Gi}\n  limits: {cpu: 4, memory: null}\n"},
		check: func(t *testing.T, objs objects) {
			args := managerArgs(t, objs)
			want := map[string]string{"--stage-cpu-request": "2", "--stage-memory-request": "4Gi", "--stage-cpu-limit": "4", "--stage-memory-limit": ""}
			for k, v := range want {
				if got, ok := args[k]; !ok || got != v {
					t.Errorf("%s=%q, want %q", k, got, v)
				}
			}
		},
	},
	{
		// The dashboard ConfigMap: sidecar label, valid JSON, every query against the
		// controller's registered metrics (dashboard_test.go).
		name:  "grafana-dashboard",
		args:  renderArgs{values: "metrics:\n  grafanaDashboard:\n    enabled: true\n    annotations: {grafana_folder: BPO}\n"},
		check: checkDashboard,
	},
	{
		name: "custom-stage-image",
		args: renderArgs{set: []string{"stageImage.repository=registry.example.com/ml/bpo", "stageImage.tag=v9.1", "stageImage.pullPolicy=Always",
			"image.repository=registry.example.com/ml/bpo-manager", "image.tag=v9.1"}},
		check: func(t *testing.T, objs objects) {
			args := managerArgs(t, objs)
			if args["--stage-image"] != "registry.example.com/ml/bpo:v9.1" || args["--stage-image-pull-policy"] != "Always" {
				t.Errorf("stage image flags: %q %q", args["--stage-image"], args["--stage-image-pull-policy"])
			}
			if img := str(managerContainer(t, objs)["image"]); img != "registry.example.com/ml/bpo-manager:v9.1" {
				t.Errorf("manager image %q", img)
			}
		},
	},
	{
		name: "stage-image-digest",
		args: renderArgs{set: []string{"stageImage.digest=sha256:" + strings.Repeat("ab", 32), "stageImage.tag=ignored"}},
		check: func(t *testing.T, objs objects) {
			if got := managerArgs(t, objs)["--stage-image"]; got != "ghcr.io/bpo-dev/bpo@sha256:"+strings.Repeat("ab", 32) {
				t.Errorf("--stage-image=%q, want the digest reference", got)
			}
		},
	},
	{
		name: "metrics-and-leader-election-off",
		args: renderArgs{set: []string{"metrics.enabled=false", "leaderElection.enabled=false"}},
		check: func(t *testing.T, objs objects) {
			args := managerArgs(t, objs)
			if args["--metrics-bind-address"] != "0" || args["--leader-elect"] != "false" {
				t.Errorf("args %v", args)
			}
			for _, svc := range objs.ofKind("Service") {
				if strings.HasSuffix(svc.GetName(), "-metrics") {
					t.Errorf("metrics.enabled=false still renders %s", svc.GetName())
				}
			}
			if objs.get("Role", releaseNamespace, "bpo-operator-leader-election") != nil {
				t.Errorf("leaderElection.enabled=false still renders the leader-election Role")
			}
			for _, p := range field(managerContainer(t, objs), "ports").([]any) {
				if str(mapOf(p)["name"]) == "metrics" {
					t.Errorf("metrics port still exposed")
				}
			}
		},
	},
	{
		name: "existing-service-account",
		args: renderArgs{set: []string{"serviceAccount.create=false", "serviceAccount.name=platform-sa"}},
		check: func(t *testing.T, objs objects) {
			if len(objs.ofKind("ServiceAccount")) != 0 {
				t.Errorf("serviceAccount.create=false still renders a ServiceAccount")
			}
			if got := str(field(objs.one(t, "Deployment").Object, "spec", "template", "spec", "serviceAccountName")); got != "platform-sa" {
				t.Errorf("serviceAccountName %q", got)
			}
			checkBinding(t, objs.get("ClusterRoleBinding", "", "bpo-operator-manager"), "ClusterRole", "bpo-operator-manager", "platform-sa")
		},
	},
	{
		name: "everything",
		args: renderArgs{release: "prod", values: `
replicaCount: 2
imagePullSecrets: [{name: regcred}]
nodeSelector: {kubernetes.io/os: linux}
tolerations: [{key: dedicated, operator: Equal, value: control-plane, effect: NoSchedule}]
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector: {matchLabels: {app.kubernetes.io/name: bpo-operator}}
topologySpreadConstraints:
- maxSkew: 1
  topologyKey: topology.kubernetes.io/zone
  whenUnsatisfiable: ScheduleAnyway
  labelSelector: {matchLabels: {app.kubernetes.io/name: bpo-operator}}
priorityClassName: system-cluster-critical
podAnnotations: {example.com/team: ml}
podLabels: {example.com/tier: control}
commonLabels: {example.com/owner: platform}
podDisruptionBudget: {enabled: true}
serviceAccount: {annotations: {example.com/role: bpo}}
manager:
  maxConcurrentReconciles: 4
  logLevel: debug
  logEncoder: console
  extraArgs: ["--zap-stacktrace-level=panic"]
  env: [{name: GOMEMLIMIT, value: 200MiB}]
metrics:
  service: {annotations: {example.com/scrape: "true"}}
  serviceMonitor: {enabled: true, relabelings: [{action: labeldrop, regex: pod}]}
`},
		check: func(t *testing.T, objs objects) {
			dep := objs.one(t, "Deployment")
			if dep.GetName() != "prod-bpo-operator" {
				t.Errorf("release prod: Deployment %q, want prod-bpo-operator", dep.GetName())
			}
			spec := mapOf(field(dep.Object, "spec", "template", "spec"))
			if field(dep.Object, "spec", "replicas") != float64(2) {
				t.Errorf("replicas %v", field(dep.Object, "spec", "replicas"))
			}
			if str(field(spec, "imagePullSecrets", "[0]", "name")) != "regcred" || str(field(spec, "nodeSelector", "kubernetes.io/os")) != "linux" ||
				str(field(spec, "tolerations", "[0]", "key")) != "dedicated" || field(spec, "affinity", "podAntiAffinity") == nil ||
				field(spec, "topologySpreadConstraints", "[0]") == nil || str(spec["priorityClassName"]) != "system-cluster-critical" {
				t.Errorf("pod scheduling fields not rendered: %v", spec)
			}
			if objs.one(t, "PodDisruptionBudget") == nil || dep.GetLabels()["example.com/owner"] != "platform" {
				t.Errorf("PDB or commonLabels missing")
			}
			args := managerArgs(t, objs)
			if args["--max-concurrent-reconciles"] != "4" || args["--zap-log-level"] != "debug" || args["--zap-stacktrace-level"] != "panic" {
				t.Errorf("args %v", args)
			}
			if str(field(managerContainer(t, objs), "env", "[0]", "name")) != "GOMEMLIMIT" {
				t.Errorf("env not rendered")
			}
			if field(objs.one(t, "ServiceMonitor").Object, "spec", "endpoints", "[0]", "relabelings", "[0]") == nil {
				t.Errorf("relabelings not rendered")
			}
		},
	},
}

// TestChartTemplate renders every case of the matrix and runs its assertions, plus the ones
// every rendering must satisfy.
func TestChartTemplate(t *testing.T) {
	t.Parallel()
	for _, c := range matrix {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			objs := render(t, c.args)
			checkCommon(t, objs)
			c.check(t, objs)
		})
	}
}

// checkCommon holds for every values combination.
func checkCommon(t *testing.T, objs objects) {
	t.Helper()
	ns := releaseNamespace
	for _, u := range objs {
		switch u.GetKind() {
		case "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding":
			if u.GetNamespace() != "" {
				t.Errorf("cluster-scoped %s/%s has namespace %q", u.GetKind(), u.GetName(), u.GetNamespace())
			}
		case "Role", "RoleBinding":
			if u.GetNamespace() == "" {
				t.Errorf("%s/%s has no namespace", u.GetKind(), u.GetName())
			}
		default:
			if u.GetNamespace() != ns {
				t.Errorf("%s/%s in namespace %q, want the release namespace %q", u.GetKind(), u.GetName(), u.GetNamespace(), ns)
			}
		}
		if u.GetKind() != "CustomResourceDefinition" && u.GetLabels()["app.kubernetes.io/managed-by"] != "Helm" {
			t.Errorf("%s/%s lacks the standard labels: %v", u.GetKind(), u.GetName(), u.GetLabels())
		}
	}
	dep := objs.one(t, "Deployment")
	pod := mapOf(field(dep.Object, "spec", "template", "spec"))

	// Selector matches the pod labels.
	podLabels := mapOf(field(dep.Object, "spec", "template", "metadata", "labels"))
	for k, v := range mapOf(field(dep.Object, "spec", "selector", "matchLabels")) {
		if podLabels[k] != v {
			t.Errorf("selector %s=%v does not match the pod label %v", k, v, podLabels[k])
		}
	}

	// Restricted pod security.
	psc := mapOf(pod["securityContext"])
	if psc["runAsNonRoot"] != true || str(field(psc, "seccompProfile", "type")) != "RuntimeDefault" {
		t.Errorf("pod securityContext %v: want runAsNonRoot true and seccompProfile RuntimeDefault", psc)
	}
	if pod["hostNetwork"] == true || pod["hostPID"] == true || pod["hostIPC"] == true {
		t.Errorf("host namespaces in %v", pod)
	}
	c := managerContainer(t, objs)
	sc := mapOf(c["securityContext"])
	if sc["runAsNonRoot"] != true || sc["readOnlyRootFilesystem"] != true || sc["allowPrivilegeEscalation"] != false ||
		sc["privileged"] == true || !slices.Equal(strList(field(sc, "capabilities", "drop")), []string{"ALL"}) ||
		len(strList(field(sc, "capabilities", "add"))) != 0 || str(field(sc, "seccompProfile", "type")) != "RuntimeDefault" {
		t.Errorf("container securityContext %v is not restricted", sc)
	}
	if !slices.Equal(strList(c["command"]), []string{"/manager"}) {
		t.Errorf("command %v, want [/manager] (Dockerfile.manager's binary)", c["command"])
	}
	if field(c, "resources", "requests") == nil || field(c, "resources", "limits", "memory") == nil {
		t.Errorf("resources %v: want requests and a memory limit", c["resources"])
	}

	// Probes hit the health port, which is the --health-probe-bind-address port.
	args := managerArgs(t, objs)
	ports := map[string]string{}
	for _, p := range c["ports"].([]any) {
		ports[str(mapOf(p)["name"])] = str(mapOf(p)["containerPort"])
	}
	if ":"+ports["health"] != args["--health-probe-bind-address"] {
		t.Errorf("health port %q vs --health-probe-bind-address=%q", ports["health"], args["--health-probe-bind-address"])
	}
	for probe, path := range map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz"} {
		if str(field(c, probe, "httpGet", "port")) != "health" || str(field(c, probe, "httpGet", "path")) != path {
			t.Errorf("%s %v: want httpGet %s on port health", probe, c[probe], path)
		}
	}
	if m, ok := ports["metrics"]; ok && ":"+m != args["--metrics-bind-address"] {
		t.Errorf("metrics port %q vs --metrics-bind-address=%q", m, args["--metrics-bind-address"])
	}
	for _, flag := range []string{"--leader-elect", "--leader-election-namespace", "--stage-image", "--stage-image-pull-policy", "--metrics-bind-address", "--health-probe-bind-address"} {
		if _, ok := args[flag]; !ok {
			t.Errorf("manager args lack %s: %v", flag, args)
		}
	}
	if args["--leader-election-namespace"] != ns {
		t.Errorf("--leader-election-namespace=%q", args["--leader-election-namespace"])
	}

	// The metrics Service selects the manager pods.
	for _, svc := range objs.ofKind("Service") {
		for k, v := range mapOf(field(svc.Object, "spec", "selector")) {
			if podLabels[k] != v {
				t.Errorf("Service %s selects %s=%v; pods have %v", svc.GetName(), k, v, podLabels[k])
			}
		}
		// <fullname>-metrics targets the manager's metrics port, <fullname>-progress its progress port.
		want := svc.GetName()[strings.LastIndex(svc.GetName(), "-")+1:]
		named := false
		for _, p := range managerContainer(t, objs)["ports"].([]any) {
			named = named || str(mapOf(p)["name"]) == want
		}
		if target := str(field(svc.Object, "spec", "ports", "[0]", "targetPort")); target != want || !named {
			t.Errorf("Service %s targets %v, want the manager's %q port", svc.GetName(), target, want)
		}
	}

	// Every binding points at a rendered role and the manager's ServiceAccount.
	sa := str(pod["serviceAccountName"])
	for _, b := range append(objs.ofKind("RoleBinding"), objs.ofKind("ClusterRoleBinding")...) {
		kind := str(field(b.Object, "roleRef", "kind"))
		name := str(field(b.Object, "roleRef", "name"))
		roleNS := b.GetNamespace()
		if kind == "ClusterRole" {
			roleNS = ""
		}
		if objs.get(kind, roleNS, name) == nil {
			t.Errorf("%s %s/%s refers to %s %s, which is not rendered", b.GetKind(), b.GetNamespace(), b.GetName(), kind, name)
		}
		if strings.HasSuffix(name, "-metrics-reader") {
			continue // binds scrapers (metrics.readerSubjects), not the manager
		}
		checkBinding(t, b, kind, name, sa)
	}
	if sas := objs.ofKind("ServiceAccount"); len(sas) == 1 && sas[0].GetName() != sa {
		t.Errorf("ServiceAccount %s, pods run as %s", sas[0].GetName(), sa)
	}
}

func checkDefaults(t *testing.T, objs objects) {
	want := map[string]int{"CustomResourceDefinition": 1, "ServiceAccount": 1, "ClusterRole": 5, "ClusterRoleBinding": 2,
		"Role": 1, "RoleBinding": 1, "Service": 2, "Deployment": 1}
	got := map[string]int{}
	for _, u := range objs {
		got[u.GetKind()]++
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("rendered kinds %v, want %v", got, want)
	}
	crd := objs.one(t, "CustomResourceDefinition")
	if crd.GetName() != "alignmentruns.alignment.bpo.dev" {
		t.Errorf("CRD %s", crd.GetName())
	}
	if a := crd.GetAnnotations(); a["helm.sh/resource-policy"] != "keep" || a["argocd.argoproj.io/sync-options"] != "Prune=false" {
		t.Errorf("CRD annotations %v: want helm.sh/resource-policy=keep and Prune=false", a)
	}
	app := chartAppVersion(t)
	args := managerArgs(t, objs)
	wantArgs := map[string]string{
		"--leader-elect": "true", "--leader-election-namespace": releaseNamespace,
		"--metrics-bind-address": ":8443", "--metrics-secure": "true", "--health-probe-bind-address": ":8081",
		"--stage-cpu-request": "100m", "--stage-memory-request": "256Mi", "--stage-cpu-limit": "", "--stage-memory-limit": "2Gi",
		"--stage-image": "ghcr.io/bpo-dev/bpo:" + app, "--stage-image-pull-policy": "IfNotPresent",
		"--max-concurrent-reconciles": "1", "--zap-log-level": "info", "--zap-encoder": "json",
		"--allow-stage-command": "false", "--allow-stage-secret-env": "false",
		"--progress-bind-address": ":8082", "--progress-url": "http://bpo-operator-progress." + releaseNamespace + ".svc:8082",
	}
	if !reflect.DeepEqual(args, wantArgs) {
		t.Errorf("manager args\n got %v\nwant %v", args, wantArgs)
	}
	if img := str(managerContainer(t, objs)["image"]); img != "ghcr.io/bpo-dev/bpo-manager:"+app {
		t.Errorf("manager image %q", img)
	}
	dep := objs.one(t, "Deployment")
	if dep.GetName() != "bpo-operator" || field(dep.Object, "spec", "replicas") != float64(1) {
		t.Errorf("Deployment %s replicas %v", dep.GetName(), field(dep.Object, "spec", "replicas"))
	}
	psc := mapOf(field(dep.Object, "spec", "template", "spec", "securityContext"))
	if psc["runAsUser"] != float64(65532) || psc["runAsGroup"] != float64(65532) {
		t.Errorf("pod securityContext %v: want the images' user 65532", psc)
	}

	// RBAC: the manager's ClusterRole has exactly the generated rules.
	role := objs.get("ClusterRole", "", "bpo-operator-manager")
	if role == nil {
		t.Fatalf("no ClusterRole bpo-operator-manager: %s", objs)
	}
	if got, want := normalize(t, role.Object["rules"]), baseManagerRules(t); !reflect.DeepEqual(got, want) {
		t.Errorf("ClusterRole rules differ from config/rbac/role.yaml:\n got %v\nwant %v", got, want)
	}
	le := objs.get("Role", releaseNamespace, "bpo-operator-leader-election")
	if le == nil {
		t.Fatalf("no leader-election Role")
	}
	var leases bool
	for _, r := range le.Object["rules"].([]any) {
		rule := mapOf(r)
		if slices.Contains(strList(rule["resources"]), "leases") && slices.Contains(strList(rule["apiGroups"]), "coordination.k8s.io") {
			leases = slices.Contains(strList(rule["verbs"]), "update") && slices.Contains(strList(rule["verbs"]), "create")
		}
	}
	if !leases {
		t.Errorf("leader-election Role cannot create and update leases: %v", le.Object["rules"])
	}
	// The metrics endpoint's roles carry the same rules as config/rbac; the manager is bound
	// to metrics-auth, nobody to metrics-reader until metrics.readerSubjects names a scraper.
	for name, file := range map[string]string{"bpo-operator-metrics-auth": "metrics_auth_role.yaml", "bpo-operator-metrics-reader": "metrics_reader_role.yaml"} {
		got := objs.get("ClusterRole", "", name)
		want := readManifests(t, filepath.Join(repoRoot, "config", "rbac", file)).one(t, "ClusterRole")
		if got == nil || !reflect.DeepEqual(normalize(t, got.Object["rules"]), normalize(t, want.Object["rules"])) {
			t.Errorf("ClusterRole %s missing or its rules differ from config/rbac/%s", name, file)
		}
	}
	checkBinding(t, objs.get("ClusterRoleBinding", "", "bpo-operator-metrics-auth"), "ClusterRole", "bpo-operator-metrics-auth", serviceAccountName(t, objs))
	// Aggregated editor/viewer roles carry the same rules as config/rbac.
	for suffix, file := range map[string]string{"editor": "alignmentrun_editor_role.yaml", "viewer": "alignmentrun_viewer_role.yaml"} {
		got := objs.get("ClusterRole", "", "bpo-operator-alignmentrun-"+suffix)
		want := readManifests(t, filepath.Join(repoRoot, "config", "rbac", file)).one(t, "ClusterRole")
		if got == nil {
			t.Errorf("no %s ClusterRole", suffix)
			continue
		}
		if !reflect.DeepEqual(normalize(t, got.Object["rules"]), normalize(t, want.Object["rules"])) {
			t.Errorf("%s rules differ from config/rbac/%s", suffix, file)
		}
		for k, v := range want.GetLabels() {
			if strings.HasPrefix(k, "rbac.authorization.k8s.io/aggregate-to-") && got.GetLabels()[k] != v {
				t.Errorf("%s ClusterRole lacks label %s=%s", suffix, k, v)
			}
		}
	}
}

func serviceAccountName(t *testing.T, objs objects) string {
	t.Helper()
	return str(field(objs.one(t, "Deployment").Object, "spec", "template", "spec", "serviceAccountName"))
}

func checkBinding(t *testing.T, b *unstructured.Unstructured, kind, name, sa string) {
	t.Helper()
	if b == nil {
		t.Errorf("binding to %s %s not rendered", kind, name)
		return
	}
	if str(field(b.Object, "roleRef", "kind")) != kind || str(field(b.Object, "roleRef", "name")) != name {
		t.Errorf("%s %s: roleRef %v, want %s %s", b.GetKind(), b.GetName(), b.Object["roleRef"], kind, name)
	}
	subj := mapOf(field(b.Object, "subjects", "[0]"))
	if str(subj["kind"]) != "ServiceAccount" || str(subj["name"]) != sa || str(subj["namespace"]) != releaseNamespace {
		t.Errorf("%s %s: subject %v, want ServiceAccount %s/%s", b.GetKind(), b.GetName(), subj, releaseNamespace, sa)
	}
}

// normalize round-trips a value through JSON, so YAML-decoded values compare with DeepEqual.
func normalize(t *testing.T, v any) any {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func baseManagerRules(t *testing.T) any {
	t.Helper()
	role := readManifests(t, filepath.Join(repoRoot, "config", "rbac", "role.yaml")).one(t, "ClusterRole")
	return normalize(t, role.Object["rules"])
}

// TestChartRejectsInvalidValues: the schema and the templates' checks refuse bad values with a
// message naming the problem.
func TestChartRejectsInvalidValues(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		args renderArgs
		want string
	}{
		"namespaced without namespaces": {renderArgs{set: []string{"rbac.namespaced=true"}}, "rbac.namespaced=true needs watchNamespaces"},
		"bad stage pull policy":         {renderArgs{set: []string{"stageImage.pullPolicy=Sometimes"}}, "pullPolicy"},
		"unknown top-level key":         {renderArgs{set: []string{"stageimage.tag=x"}}, "stageimage"},
		"bad namespace name":            {renderArgs{set: []string{"watchNamespaces={Team_A}"}}, "watchNamespaces"},
		"serviceMonitor without metrics": {renderArgs{set: []string{"metrics.enabled=false", "metrics.serviceMonitor.enabled=true"}},
			"metrics.serviceMonitor.enabled needs metrics.enabled"},
		"dashboard without metrics": {renderArgs{set: []string{"metrics.enabled=false", "metrics.grafanaDashboard.enabled=true"}},
			"metrics.grafanaDashboard.enabled needs metrics.enabled"},
		"no service account name":  {renderArgs{set: []string{"serviceAccount.create=false"}}, "serviceAccount.name is required"},
		"extra arg without dashes": {renderArgs{set: []string{"manager.extraArgs={zap-devel}"}}, "extraArgs"},
		"replicas without leader election": {renderArgs{set: []string{"replicaCount=2", "leaderElection.enabled=false"}},
			"replicaCount > 1 needs leaderElection.enabled=true"},
		"bad stage quantity":     {renderArgs{set: []string{"stageResources.limits.memory=lots"}}, "stageResources"},
		"unknown stage resource": {renderArgs{set: []string{"stageResources.requests.gpu=1"}}, "stageResources"},
		"metrics reader without namespace": {renderArgs{values: "metrics:\n  readerSubjects: [{kind: ServiceAccount, name: prom}]\n"},
			"a ServiceAccount subject needs a namespace"},
		"bad cert secret name": {renderArgs{set: []string{"metrics.certSecret=Not_A_Name"}}, "certSecret"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := helmTemplate(t, c.args)
			if err == nil {
				t.Fatalf("helm template accepted %v", c.args.set)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error does not mention %q:\n%v", c.want, err)
			}
		})
	}
}

// TestChartCRDsInSync: every CRD in config/crd/bases has a copy in the chart's templates/crds
// that differs only by the template lines sync-crds.sh adds, and the rendered CRD equals the
// generated one apart from the keep annotations.
func TestChartCRDsInSync(t *testing.T) {
	t.Parallel()
	bases, err := filepath.Glob(filepath.Join(repoRoot, "config", "crd", "bases", "*.yaml"))
	if err != nil || len(bases) == 0 {
		t.Fatalf("no CRDs in config/crd/bases: %v", err)
	}
	copies, _ := filepath.Glob(filepath.Join(chartDir, "templates", "crds", "*.yaml"))
	var names []string
	for _, c := range copies {
		names = append(names, filepath.Base(c))
	}
	for _, base := range bases {
		name := filepath.Base(base)
		names = slices.DeleteFunc(names, func(n string) bool { return n == name })
		want, err := os.ReadFile(base)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(chartDir, "templates", "crds", name))
		if err != nil {
			t.Errorf("%s has no copy in the chart (run charts/bpo-operator/sync-crds.sh): %v", name, err)
			continue
		}
		if diff := firstDiff(stripTemplateLines(string(got)), string(want)); diff != "" {
			t.Errorf("charts/bpo-operator/templates/crds/%s differs from config/crd/bases/%s (run charts/bpo-operator/sync-crds.sh):\n%s", name, name, diff)
		}
	}
	if len(names) > 0 {
		t.Errorf("chart CRDs without a source in config/crd/bases: %v", names)
	}

	// The script agrees (it also checks the wrapping lines).
	cmd := exec.Command("bash", filepath.Join(chartDir, "sync-crds.sh"), "--check")
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("sync-crds.sh --check: %v\n%s", err, out)
	}

	// The rendered object is the generated CRD plus the two annotations.
	rendered := render(t, renderArgs{}).ofKind("CustomResourceDefinition")
	generated := objects{}
	for _, base := range bases {
		generated = append(generated, readManifests(t, base)...)
	}
	if len(rendered) != len(generated) {
		t.Fatalf("rendered %d CRDs, config has %d", len(rendered), len(generated))
	}
	for _, g := range generated {
		r := rendered.get("CustomResourceDefinition", "", g.GetName())
		if r == nil {
			t.Errorf("CRD %s not rendered", g.GetName())
			continue
		}
		r = r.DeepCopy()
		ann := r.GetAnnotations()
		delete(ann, "helm.sh/resource-policy")
		delete(ann, "argocd.argoproj.io/sync-options")
		r.SetAnnotations(ann)
		if !reflect.DeepEqual(normalize(t, r.Object), normalize(t, g.Object)) {
			t.Errorf("rendered CRD %s differs from config/crd/bases", g.GetName())
		}
	}

}

// stripTemplateLines drops what sync-crds.sh adds to a CRD: template actions and the keep annotations.
func stripTemplateLines(s string) string {
	var out []string
	for _, line := range strings.SplitAfter(s, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.Contains(line, "{{") || trimmed == "helm.sh/resource-policy: keep" || trimmed == "argocd.argoproj.io/sync-options: Prune=false" {
			continue
		}
		out = append(out, line)
	}
	res := strings.Join(out, "")
	if !strings.HasSuffix(res, "\n") && strings.HasSuffix(s, "\n") {
		res += "\n"
	}
	return res
}

// firstDiff describes the first differing line of two texts ("" when equal).
func firstDiff(got, want string) string {
	if got == want {
		return ""
	}
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := 0; i < len(g) || i < len(w); i++ {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return "line " + strconv.Itoa(i+1) + ":\n  chart:  " + gl + "\n  config: " + wl
		}
	}
	return "texts differ in trailing whitespace"
}

// TestChartRBACInSync: files/manager-role.yaml is a verbatim copy of config/rbac/role.yaml
// (controller-gen output), which the templates read.
func TestChartRBACInSync(t *testing.T) {
	t.Parallel()
	want, err := os.ReadFile(filepath.Join(repoRoot, "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(chartDir, "files", "manager-role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := firstDiff(string(got), string(want)); diff != "" {
		t.Errorf("charts/bpo-operator/files/manager-role.yaml differs from config/rbac/role.yaml (run charts/bpo-operator/sync-crds.sh):\n%s", diff)
	}
}
