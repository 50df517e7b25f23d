package chart

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/bpo-dev/bpo/controllers"
)

// kubectlPath finds kubectl in KUBEBUILDER_ASSETS or on PATH (skips outside CI without one).
func kubectlPath(t *testing.T) string {
	t.Helper()
	if p := filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl"); os.Getenv("KUBEBUILDER_ASSETS") != "" && isExecutable(p) {
		return p
	}
	p, err := exec.LookPath("kubectl")
	if err != nil {
		need(t, "no kubectl in KUBEBUILDER_ASSETS or PATH")
	}
	return p
}

var optionalComponent = regexp.MustCompile(`(?m)^#- \.\./(prometheus|network-policy)$`)

// kustomizeDefault renders config/default, with its commented optional components (the
// ServiceMonitor, the NetworkPolicy) enabled when withOptional is set.
func kustomizeDefault(t *testing.T, withOptional bool) objects {
	t.Helper()
	src := filepath.Join(repoRoot, "config", "default")
	dir := src
	if withOptional {
		data, err := os.ReadFile(filepath.Join(src, "kustomization.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if n := len(optionalComponent.FindAll(data, -1)); n != 2 {
			t.Fatalf("config/default/kustomization.yaml has %d of the 2 commented components (#- ../prometheus, #- ../network-policy)", n)
		}
		text := optionalComponent.ReplaceAllString(string(data), "- ../$1")
		// The same file in a scratch folder: ../x becomes the relative path to config/x
		// (kustomize refuses absolute paths).
		dir = t.TempDir()
		rel, err := filepath.Rel(dir, filepath.Join(repoRoot, "config"))
		if err != nil {
			t.Fatal(err)
		}
		text = regexp.MustCompile(`(?m)^- \.\./`).ReplaceAllString(text, "- "+rel+"/")
		if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command(kubectlPath(t), "kustomize", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, out)
	}
	objs, err := parseManifests(out)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// checkNetworkPolicy: the policy selects exactly the manager pods, admits ingress only to the
// metrics port, and only from namespaces or pods carrying the scraper labels.
func checkNetworkPolicy(t *testing.T, objs objects, scraper map[string]any) {
	t.Helper()
	np := objs.one(t, "NetworkPolicy")
	dep := objs.one(t, "Deployment")
	podLabels := mapOf(field(dep.Object, "spec", "template", "metadata", "labels"))
	sel := mapOf(field(np.Object, "spec", "podSelector", "matchLabels"))
	if len(sel) == 0 || !reflect.DeepEqual(sel, mapOf(field(dep.Object, "spec", "selector", "matchLabels"))) {
		t.Errorf("NetworkPolicy podSelector %v, want the Deployment's selector", sel)
	}
	for k, v := range sel {
		if podLabels[k] != v {
			t.Errorf("NetworkPolicy selects %s=%v, the manager pods have %v", k, v, podLabels[k])
		}
	}
	if types := strList(field(np.Object, "spec", "policyTypes")); !reflect.DeepEqual(types, []string{"Ingress"}) {
		t.Errorf("policyTypes %v", types)
	}
	ingress, _ := field(np.Object, "spec", "ingress").([]any)
	if len(ingress) != 2 {
		t.Fatalf("want two ingress rules (metrics, progress), got %v", ingress)
	}
	var metricsPort, progressPort string
	for _, p := range managerContainer(t, objs)["ports"].([]any) {
		switch str(mapOf(p)["name"]) {
		case "metrics":
			metricsPort = str(mapOf(p)["containerPort"])
		case "progress":
			progressPort = str(mapOf(p)["containerPort"])
		}
	}
	// The progress port: from stage pods only (any namespace, the run label present).
	pports, _ := mapOf(ingress[1])["ports"].([]any)
	pfrom, _ := mapOf(ingress[1])["from"].([]any)
	wantExpr := []any{map[string]any{"key": "alignment.bpo.dev/run", "operator": "Exists"}}
	if len(pports) != 1 || progressPort == "" || str(mapOf(pports[0])["port"]) != progressPort || len(pfrom) != 1 ||
		len(mapOf(mapOf(pfrom[0])["namespaceSelector"])) != 0 ||
		!reflect.DeepEqual(field(mapOf(pfrom[0]), "podSelector", "matchExpressions"), wantExpr) {
		t.Errorf("progress ingress %v: want port %s from pods with the alignment.bpo.dev/run label in any namespace", ingress[1], progressPort)
	}
	ports, _ := mapOf(ingress[0])["ports"].([]any)
	if len(ports) != 1 || str(mapOf(ports[0])["port"]) != metricsPort || str(mapOf(ports[0])["protocol"]) != "TCP" {
		t.Errorf("ingress ports %v, want only the metrics port %s", ports, metricsPort)
	}
	from, _ := mapOf(ingress[0])["from"].([]any)
	if len(from) != 2 {
		t.Fatalf("want two peers (scraper namespaces, scraper pods), got %v", from)
	}
	if got := mapOf(field(mapOf(from[0]), "namespaceSelector", "matchLabels")); !reflect.DeepEqual(got, scraper) || mapOf(from[0])["podSelector"] != nil {
		t.Errorf("peer 0 %v: want the namespaces labelled %v", from[0], scraper)
	}
	if ns := mapOf(from[1])["namespaceSelector"]; ns == nil || len(mapOf(ns)) != 0 ||
		!reflect.DeepEqual(mapOf(field(mapOf(from[1]), "podSelector", "matchLabels")), scraper) {
		t.Errorf("peer 1 %v: want pods labelled %v in any namespace", from[1], scraper)
	}
}

// TestKustomizeOptionalComponents: config/default with its commented ServiceMonitor and
// NetworkPolicy enabled renders them consistent with the Service and the Deployment, and the
// whole passes the server-side dry-run.
func TestKustomizeOptionalComponents(t *testing.T) {
	t.Parallel()
	plain := kustomizeDefault(t, false)
	if n := len(plain.ofKind("ServiceMonitor")) + len(plain.ofKind("NetworkPolicy")); n != 0 {
		t.Errorf("config/default enables the optional components by default: %s", plain)
	}
	objs := kustomizeDefault(t, true)
	checkNetworkPolicy(t, objs, map[string]any{"alignment.bpo.dev/metrics-scraper": "true"})

	sm, svc := objs.one(t, "ServiceMonitor"), metricsService(t, objs)
	if sm.GetNamespace() != "bpo-system" {
		t.Errorf("ServiceMonitor in %q", sm.GetNamespace())
	}
	for k, v := range mapOf(field(sm.Object, "spec", "selector", "matchLabels")) {
		if svc.GetLabels()[k] != str(v) {
			t.Errorf("ServiceMonitor selects %s=%v, the metrics Service has %q", k, v, svc.GetLabels()[k])
		}
	}
	ep := mapOf(field(sm.Object, "spec", "endpoints", "[0]"))
	if str(ep["port"]) != str(field(svc.Object, "spec", "ports", "[0]", "name")) || str(ep["scheme"]) != "https" ||
		str(ep["bearerTokenFile"]) != "/var/run/secrets/kubernetes.io/serviceaccount/token" ||
		!reflect.DeepEqual(ep["tlsConfig"], map[string]any{"insecureSkipVerify": true}) {
		t.Errorf("ServiceMonitor endpoint %v: want https on the Service's port with the ServiceAccount token", ep)
	}

	// The manager serves HTTPS metrics and may review tokens.
	args := managerArgs(t, objs)
	if args["--metrics-secure"] != "true" || args["--metrics-bind-address"] != ":8443" {
		t.Errorf("manager args %v", args)
	}
	crb := objs.get("ClusterRoleBinding", "", "bpo-metrics-auth-rolebinding")
	if crb == nil {
		t.Fatalf("no metrics-auth binding: %s", objs)
	}
	if subj := mapOf(field(crb.Object, "subjects", "[0]")); str(subj["name"]) != str(field(objs.one(t, "Deployment").Object, "spec", "template", "spec", "serviceAccountName")) || str(subj["namespace"]) != "bpo-system" {
		t.Errorf("metrics-auth binds %v", subj)
	}
	if objs.get("ClusterRole", "", "bpo-metrics-reader") == nil {
		t.Errorf("no bpo-metrics-reader ClusterRole")
	}
	apiServer(t)
	dryRunAll(t, objs)
}

// imageRefs lists the container images of every pod template and the --stage-image flags.
func imageRefs(objs objects) []string {
	var refs []string
	for _, u := range objs {
		spec := mapOf(field(u.Object, "spec", "template", "spec"))
		if u.GetKind() == "Pod" {
			spec = mapOf(u.Object["spec"])
		}
		for _, key := range []string{"initContainers", "containers"} {
			list, _ := spec[key].([]any)
			for _, c := range list {
				refs = append(refs, str(mapOf(c)["image"]))
				for _, a := range strList(mapOf(c)["args"]) {
					if v, ok := strings.CutPrefix(a, "--stage-image="); ok {
						refs = append(refs, v)
					}
				}
			}
		}
	}
	return refs
}

// floating reports why an image reference does not pin a release: a :latest tag, or no tag or
// digest at all (which means :latest).
func floating(ref string) string {
	if strings.Contains(ref, "@sha256:") {
		return ""
	}
	name := ref[strings.LastIndex(ref, "/")+1:]
	tag, ok := "", false
	if i := strings.LastIndex(name, ":"); i >= 0 {
		tag, ok = name[i+1:], true
	}
	switch {
	case !ok || tag == "":
		return "no tag (pulls :latest)"
	case tag == "latest":
		return "the :latest tag"
	}
	return ""
}

func TestFloating(t *testing.T) {
	t.Parallel()
	for ref, want := range map[string]bool{
		"ghcr.io/bpo-dev/bpo:0.1.0": false, "ghcr.io/bpo-dev/bpo:latest": true, "ghcr.io/bpo-dev/bpo": true,
		"localhost:5000/bpo": true, "localhost:5000/bpo:1": false, "ghcr.io/bpo-dev/bpo@sha256:" + strings.Repeat("a", 64): false,
	} {
		if got := floating(ref) != ""; got != want {
			t.Errorf("floating(%q) = %v, want %v", ref, got, want)
		}
	}
}

// TestNoLatestImages: no shipped manifest runs a moving image: every image of config/default
// (with its optional components), config/samples and every chart rendering of the matrix has a
// release tag or a digest; the defaults are the chart's appVersion, which is also the manager's
// compiled-in version (its default stage image).
func TestNoLatestImages(t *testing.T) {
	t.Parallel()
	app := chartAppVersion(t)
	if controllers.Version != app || controllers.DefaultStageImage != "ghcr.io/bpo-dev/bpo:"+app {
		t.Errorf("controllers.Version %q / DefaultStageImage %q, want the chart's appVersion %q", controllers.Version, controllers.DefaultStageImage, app)
	}
	sources := map[string]objects{"config/default": kustomizeDefault(t, true)}
	out, err := exec.Command(kubectlPath(t), "kustomize", filepath.Join(repoRoot, "config", "samples")).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl kustomize config/samples: %v\n%s", err, out)
	}
	if sources["config/samples"], err = parseManifests(out); err != nil {
		t.Fatal(err)
	}
	for _, c := range matrix {
		sources["chart "+c.name] = render(t, c.args)
	}
	for src, objs := range sources {
		for _, ref := range imageRefs(objs) {
			if why := floating(ref); why != "" {
				t.Errorf("%s: image %q has %s", src, ref, why)
			}
		}
	}
	// config/default pins the same release as the chart.
	refs := imageRefs(sources["config/default"])
	want := []string{"ghcr.io/bpo-dev/bpo-manager:" + app, "ghcr.io/bpo-dev/bpo:" + app}
	if !reflect.DeepEqual(refs, want) {
		t.Errorf("config/default images %v, want %v", refs, want)
	}
}

// metricsService is the Service in front of the metrics port (the progress endpoint has one too).
func metricsService(t *testing.T, objs objects) *unstructured.Unstructured {
	t.Helper()
	var out *unstructured.Unstructured
	for _, svc := range objs.ofKind("Service") {
		if strings.HasSuffix(svc.GetName(), "-metrics") {
			if out != nil {
				t.Fatalf("two metrics Services: %s, %s", out.GetName(), svc.GetName())
			}
			out = svc
		}
	}
	if out == nil {
		t.Fatalf("no metrics Service in %s", objs)
	}
	return out
}
