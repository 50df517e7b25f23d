package chart

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"sigs.k8s.io/yaml"
)

var gitopsDoc = filepath.Join(repoRoot, "docs", "gitops.md")

// specMutability classifies the spec fields from the CRD: a field is immutable when its schema
// has the rule `self == oldSelf`; an object field none of whose own rules is that, but with
// immutable children, is "partly" mutable and its children are classified one level down.
func specMutability(t *testing.T) (top map[string]string, nested map[string]map[string]string) {
	t.Helper()
	crd := readManifests(t, filepath.Join(repoRoot, "config", "crd", "bases", "alignment.bpo.dev_alignmentruns.yaml")).one(t, "CustomResourceDefinition")
	spec := mapOf(field(crd.Object, "spec", "versions", "[0]", "schema", "openAPIV3Schema", "properties", "spec", "properties"))
	if len(spec) == 0 {
		t.Fatal("no spec properties in the CRD")
	}
	immutable := func(schema map[string]any) bool {
		for _, r := range asList(schema["x-kubernetes-validations"]) {
			if strings.ReplaceAll(str(mapOf(r)["rule"]), " ", "") == "self==oldSelf" {
				return true
			}
		}
		return false
	}
	top, nested = map[string]string{}, map[string]map[string]string{}
	for name, s := range spec {
		schema := mapOf(s)
		switch {
		case immutable(schema):
			top[name] = "immutable"
		default:
			children := map[string]string{}
			partly := false
			for cname, cs := range mapOf(schema["properties"]) {
				if immutable(mapOf(cs)) {
					children[cname] = "immutable"
					partly = true
				} else {
					children[cname] = "mutable"
				}
			}
			if partly {
				top[name] = "partly"
				nested[name] = children
			} else {
				top[name] = "mutable"
			}
		}
	}
	return top, nested
}

func asList(v any) []any { l, _ := v.([]any); return l }

var backticked = regexp.MustCompile("`([^`]+)`")

// TestGitOpsFieldTables: the tables of docs/gitops.md classify every spec field of the CRD the
// way the CRD's CEL rules do.
func TestGitOpsFieldTables(t *testing.T) {
	t.Parallel()
	top, nested := specMutability(t)
	doc := readFile(t, gitopsDoc)
	docTop := map[string]string{}
	docNested := map[string]map[string]string{}
	for _, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(line, "| `spec.") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) < 3 {
			continue
		}
		name := strings.TrimPrefix(strings.Trim(strings.TrimSpace(cells[0]), "`"), "spec.")
		second := strings.ToLower(cells[1])
		switch {
		case strings.Contains(second, "immutable"):
			docTop[name] = "immutable"
		case strings.Contains(second, "partly"):
			docTop[name] = "partly"
		case strings.Contains(second, "mutable"):
			docTop[name] = "mutable"
		default: // the stage table: | `spec.<stage>` | mutable fields | immutable fields |
			m := map[string]string{}
			for _, f := range backticked.FindAllStringSubmatch(cells[1], -1) {
				m[f[1]] = "mutable"
			}
			for _, f := range backticked.FindAllStringSubmatch(cells[2], -1) {
				m[f[1]] = "immutable"
			}
			docNested[name] = m
		}
	}
	for name, want := range top {
		if got := docTop[name]; got != want {
			t.Errorf("docs/gitops.md: spec.%s is %q in the field table; the CRD says %q", name, got, want)
		}
	}
	for name := range docTop {
		if _, ok := top[name]; !ok {
			t.Errorf("docs/gitops.md lists spec.%s, which the CRD does not have", name)
		}
	}
	for stage, children := range nested {
		for name, want := range children {
			if got := docNested[stage][name]; got != want {
				t.Errorf("docs/gitops.md: spec.%s.%s is %q in the stage table; the CRD says %q", stage, name, got, want)
			}
		}
		for name := range docNested[stage] {
			if _, ok := children[name]; !ok {
				t.Errorf("docs/gitops.md lists spec.%s.%s, which the CRD does not have", stage, name)
			}
		}
	}
	if len(nested) == 0 || len(docNested) != len(nested) {
		t.Errorf("stage table rows %v, CRD partly-mutable fields %v", keys(docNested), keys(nested))
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// fluxExprs extracts the healthCheckExprs entry for AlignmentRun from docs/gitops.md.
func fluxExprs(t *testing.T) map[string]string {
	t.Helper()
	doc := readFile(t, gitopsDoc)
	for _, block := range strings.Split(doc, "```yaml\n")[1:] {
		body, _, _ := strings.Cut(block, "```")
		if !strings.Contains(body, "healthCheckExprs:") {
			continue
		}
		var parsed struct {
			HealthCheckExprs []map[string]string `json:"healthCheckExprs"`
		}
		if err := yaml.Unmarshal([]byte(body), &parsed); err != nil {
			t.Fatalf("the healthCheckExprs block of docs/gitops.md: %v", err)
		}
		for _, e := range parsed.HealthCheckExprs {
			if e["kind"] == "AlignmentRun" && e["apiVersion"] == "alignment.bpo.dev/v1alpha1" {
				return e
			}
		}
	}
	t.Fatal("docs/gitops.md has no healthCheckExprs block for AlignmentRun")
	return nil
}

// fluxStatus evaluates the expressions the way Flux's kustomize-controller does: the object's
// top-level fields are CEL variables; inProgress, failed, current are tried in that order; an
// expression that cannot be evaluated (e.g. a missing field) leaves the object in progress.
func fluxStatus(t *testing.T, exprs map[string]string, obj map[string]any) string {
	t.Helper()
	env, err := cel.NewEnv(
		cel.Variable("apiVersion", cel.StringType),
		cel.Variable("kind", cel.StringType),
		cel.Variable("metadata", cel.DynType),
		cel.Variable("spec", cel.DynType),
		cel.Variable("status", cel.DynType),
	)
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]any{}
	for k, v := range intify(obj).(map[string]any) {
		vars[k] = v
	}
	for _, key := range []string{"inProgress", "failed", "current"} {
		src, ok := exprs[key]
		if !ok {
			continue
		}
		ast, iss := env.Compile(src)
		if iss.Err() != nil {
			t.Fatalf("%s expression %q does not compile: %v", key, src, iss.Err())
		}
		if !slices.Contains([]*cel.Type{cel.BoolType, cel.DynType}, ast.OutputType()) {
			t.Fatalf("%s expression %q has type %v, want bool", key, src, ast.OutputType())
		}
		prg, err := env.Program(ast)
		if err != nil {
			t.Fatal(err)
		}
		out, _, err := prg.Eval(vars)
		if err != nil {
			return "InProgress" // e.g. "no such key": Flux keeps waiting
		}
		if out == types.True {
			return map[string]string{"inProgress": "InProgress", "failed": "Failed", "current": "Current"}[key]
		}
	}
	return "InProgress"
}

// intify turns integral float64s (YAML/JSON decoding) into int64, as in objects read from the
// API server.
func intify(v any) any {
	switch x := v.(type) {
	case float64:
		if x == float64(int64(x)) {
			return int64(x)
		}
		return x
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = intify(e)
		}
		return out
	case map[string]any:
		out := map[string]any{}
		for k, e := range x {
			out[k] = intify(e)
		}
		return out
	}
	return v
}

// TestFluxHealthCheckExprs: the Flux CEL expressions of docs/gitops.md agree with the Argo CD
// health check on the same table: Healthy = Current, Degraded = Failed, Progressing and
// Suspended = InProgress.
func TestFluxHealthCheckExprs(t *testing.T) {
	t.Parallel()
	exprs := fluxExprs(t)
	for _, key := range []string{"inProgress", "failed", "current"} {
		if exprs[key] == "" {
			t.Errorf("the healthCheckExprs entry has no %s expression", key)
		}
	}
	want := map[string]string{"Healthy": "Current", "Degraded": "Failed", "Progressing": "InProgress", "Suspended": "InProgress"}
	for _, c := range healthCases(t) {
		if c.notLive {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			if got := fluxStatus(t, exprs, c.obj); got != want[c.status] {
				t.Errorf("Flux: %s, want %s (Argo CD: %s)", got, want[c.status], c.status)
			}
		})
	}
}

// repoPath matches repository paths mentioned in the docs.
var repoPath = regexp.MustCompile("(?:^|[\\s`(\\[])((?:config|charts|hack|docs|test|api|controllers|cmd)/[A-Za-z0-9_./-]*[A-Za-z0-9_/]|Dockerfile\\.(?:manager|bpo)|NOTICE)")

// runRef matches a run named in a kubectl command: ar/<name>, `get ar <name>`, `patch ar <name>`.
var runRef = regexp.MustCompile(`(?:\bar/|\b(?:get|patch|wait|describe|delete) ar +)([a-z0-9][-a-z0-9]*[a-z0-9])\b`)

// TestDocsReferences: the files and sample runs the docs and the chart's NOTES mention exist.
func TestDocsReferences(t *testing.T) {
	t.Parallel()
	samples := map[string]bool{}
	files, _ := filepath.Glob(filepath.Join(repoRoot, "config", "samples", "*.yaml"))
	for _, f := range files {
		for _, u := range readManifests(t, f).ofKind("AlignmentRun") {
			samples[u.GetName()] = true
		}
	}
	if !samples["quickstart"] {
		t.Errorf("config/samples has no run named quickstart (runs: %v)", keys(samples))
	}
	for _, doc := range []string{
		filepath.Join(repoRoot, "docs", "deploy.md"),
		filepath.Join(repoRoot, "docs", "gitops.md"),
		filepath.Join(repoRoot, "docs", "observability.md"),
		filepath.Join(chartDir, "README.md"),
		filepath.Join(chartDir, "templates", "NOTES.txt"),
		filepath.Join(chartDir, "values.yaml"),
	} {
		text := readFile(t, doc)
		rel, _ := filepath.Rel(repoRoot, doc)
		for _, m := range repoPath.FindAllStringSubmatch(text, -1) {
			p := strings.TrimSuffix(m[1], ".")
			if strings.ContainsAny(p, "<>*") {
				continue
			}
			if _, err := os.Stat(filepath.Join(repoRoot, p)); err != nil {
				t.Errorf("%s mentions %s, which does not exist", rel, p)
			}
		}
		for _, m := range runRef.FindAllStringSubmatch(text, -1) {
			if name := m[1]; !samples[name] {
				t.Errorf("%s names the run %q, which no sample in config/samples defines", rel, m[1])
			}
		}
	}
}

// TestDeployDocKustomizeOverlay builds the image overlay of docs/deploy.md against the real
// config/default and checks that both images change.
func TestDeployDocKustomizeOverlay(t *testing.T) {
	t.Parallel()
	kubectl := filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl")
	if !isExecutable(kubectl) {
		p, err := exec.LookPath("kubectl")
		if err != nil {
			need(t, "no kubectl in KUBEBUILDER_ASSETS or PATH")
		}
		kubectl = p
	}
	doc := readFile(t, filepath.Join(repoRoot, "docs", "deploy.md"))
	var overlay string
	for _, block := range strings.Split(doc, "```yaml\n")[1:] {
		body, _, _ := strings.Cut(block, "```")
		if strings.Contains(body, "# my-overlay/kustomization.yaml") {
			overlay = body
		}
	}
	if overlay == "" {
		t.Fatal("docs/deploy.md has no my-overlay/kustomization.yaml block")
	}
	dir := t.TempDir()
	rel, err := filepath.Rel(dir, filepath.Join(repoRoot, "config", "default"))
	if err != nil {
		t.Fatal(err)
	}
	overlay = strings.Replace(overlay, "../config/default", rel, 1) // kustomize refuses absolute paths
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(overlay), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(kubectl, "kustomize", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl kustomize of the docs overlay: %v\n%s", err, out)
	}
	objs, err := parseManifests(out)
	if err != nil {
		t.Fatal(err)
	}
	c := mapOf(field(objs.one(t, "Deployment").Object, "spec", "template", "spec", "containers", "[0]"))
	if str(c["image"]) != "registry.example.com/ml/bpo-manager:0.1.0" {
		t.Errorf("overlay image %v", c["image"])
	}
	args := strList(c["args"])
	if !slices.Contains(args, "--stage-image=registry.example.com/ml/bpo:0.1.0") {
		t.Errorf("overlay args %v: the patch did not replace --stage-image", args)
	}
	for _, a := range args {
		if strings.HasPrefix(a, "--stage-image=") && a != "--stage-image=registry.example.com/ml/bpo:0.1.0" {
			t.Errorf("a second --stage-image survived: %v", args)
		}
	}
}
