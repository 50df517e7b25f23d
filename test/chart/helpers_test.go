package chart

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

const (
	releaseName      = "bpo"
	releaseNamespace = "bpo-system"
)

// repoRoot is the repository root (two levels above this package).
var repoRoot = func() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		panic("no caller information")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}()

var chartDir = filepath.Join(repoRoot, "charts", "bpo-operator")

func inCI() bool { return os.Getenv("CI") != "" }

// need skips the test outside CI and fails it under CI.
func need(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if inCI() {
		t.Fatalf("%s (CI is set, so this is a failure)", msg)
	}
	t.Skip(msg)
}

func bpoCache() string {
	if c := os.Getenv("BPO_CACHE"); c != "" {
		return c
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "bpo")
}

var helmOnce struct {
	sync.Once
	path string
	err  error
}

// helmPath finds helm: $HELM, the pinned copy in the bpo cache, PATH, and under CI
// `hack/tools.sh helm` (which installs the pinned version).
func helmPath(t *testing.T) string {
	t.Helper()
	helmOnce.Do(func() {
		if p := os.Getenv("HELM"); p != "" {
			helmOnce.path = p
			return
		}
		if p := filepath.Join(bpoCache(), "bin", "helm"); isExecutable(p) {
			helmOnce.path = p
			return
		}
		if p, err := exec.LookPath("helm"); err == nil {
			helmOnce.path = p
			return
		}
		if !inCI() {
			helmOnce.err = errors.New("helm not found ($HELM, " + filepath.Join(bpoCache(), "bin", "helm") + ", PATH); `hack/tools.sh helm` installs it")
			return
		}
		cmd := exec.Command(filepath.Join(repoRoot, "hack", "tools.sh"), "helm")
		cmd.Dir = repoRoot
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			helmOnce.err = fmt.Errorf("hack/tools.sh helm: %v\n%s", err, stderr.String())
			return
		}
		lines := strings.Fields(string(out))
		if len(lines) == 0 {
			helmOnce.err = errors.New("hack/tools.sh helm printed no path")
			return
		}
		helmOnce.path = lines[len(lines)-1]
	})
	if helmOnce.err != nil {
		need(t, "%v", helmOnce.err)
	}
	return helmOnce.path
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// helmEnv isolates helm from the user's config, cache and repositories.
func helmEnv(t *testing.T) []string {
	t.Helper()
	dir := t.TempDir()
	return append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(dir, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(dir, "config"),
		"HELM_DATA_HOME="+filepath.Join(dir, "data"),
	)
}

// runHelm runs helm with args and returns stdout; stderr is part of the error.
func runHelm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(helmPath(t), args...)
	cmd.Dir = repoRoot
	cmd.Env = helmEnv(t)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// renderArgs are the helm template arguments of one values combination.
type renderArgs struct {
	release   string
	namespace string
	values    string   // YAML written to a values file (optional)
	set       []string // --set arguments
}

// helmTemplate renders the chart and returns the manifest stream.
func helmTemplate(t *testing.T, r renderArgs) (string, error) {
	t.Helper()
	if r.release == "" {
		r.release = releaseName
	}
	if r.namespace == "" {
		r.namespace = releaseNamespace
	}
	args := []string{"template", r.release, chartDir, "--namespace", r.namespace}
	if r.values != "" {
		f := filepath.Join(t.TempDir(), "values.yaml")
		if err := os.WriteFile(f, []byte(r.values), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--values", f)
	}
	for _, s := range r.set {
		args = append(args, "--set", s)
	}
	return runHelm(t, args...)
}

// render renders and parses the chart, failing the test on error.
func render(t *testing.T, r renderArgs) objects {
	t.Helper()
	out, err := helmTemplate(t, r)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := parseManifests([]byte(out))
	if err != nil {
		t.Fatalf("parsing helm template output: %v", err)
	}
	return objs
}

// parseManifests splits a multi-document YAML stream into objects (empty documents skipped).
func parseManifests(data []byte) (objects, error) {
	var objs objects
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, err
		}
		var m map[string]any
		if err := yaml.Unmarshal(doc, &m); err != nil {
			return nil, fmt.Errorf("%v in document:\n%s", err, doc)
		}
		if len(m) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		if u.GetKind() == "" || u.GetAPIVersion() == "" {
			return nil, fmt.Errorf("document without apiVersion/kind:\n%s", doc)
		}
		objs = append(objs, u)
	}
}

func readManifests(t *testing.T, path string) objects {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := parseManifests(data)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return objs
}

type objects []*unstructured.Unstructured

// ofKind returns the objects of a kind.
func (o objects) ofKind(kind string) objects {
	var out objects
	for _, u := range o {
		if u.GetKind() == kind {
			out = append(out, u)
		}
	}
	return out
}

// one returns the only object of a kind, failing otherwise.
func (o objects) one(t *testing.T, kind string) *unstructured.Unstructured {
	t.Helper()
	k := o.ofKind(kind)
	if len(k) != 1 {
		t.Fatalf("want exactly one %s, got %d (%s)", kind, len(k), o)
	}
	return k[0]
}

// get returns the object with kind, namespace and name, or nil.
func (o objects) get(kind, namespace, name string) *unstructured.Unstructured {
	for _, u := range o {
		if u.GetKind() == kind && u.GetNamespace() == namespace && u.GetName() == name {
			return u
		}
	}
	return nil
}

func (o objects) String() string {
	var s []string
	for _, u := range o {
		id := u.GetKind() + "/" + u.GetName()
		if ns := u.GetNamespace(); ns != "" {
			id = u.GetKind() + "/" + ns + "/" + u.GetName()
		}
		s = append(s, id)
	}
	sort.Strings(s)
	return strings.Join(s, ", ")
}

// field returns the value at a dotted path (list elements as [i]) or nil.
func field(obj map[string]any, path ...string) any {
	var cur any = obj
	for _, p := range path {
		switch c := cur.(type) {
		case map[string]any:
			cur = c[p]
		case []any:
			var i int
			if _, err := fmt.Sscanf(p, "[%d]", &i); err != nil || i < 0 || i >= len(c) {
				return nil
			}
			cur = c[i]
		default:
			return nil
		}
	}
	return cur
}

func str(v any) string {
	if v == nil {
		return ""
	}
	if s, ok := v.(string); ok {
		return s
	}
	return fmt.Sprint(v)
}

func strList(v any) []string {
	l, _ := v.([]any)
	out := make([]string, 0, len(l))
	for _, e := range l {
		out = append(out, str(e))
	}
	return out
}

func mapOf(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

// managerContainer returns the Deployment's container named manager.
func managerContainer(t *testing.T, objs objects) map[string]any {
	t.Helper()
	dep := objs.one(t, "Deployment")
	for _, c := range field(dep.Object, "spec", "template", "spec", "containers").([]any) {
		if m := mapOf(c); str(m["name"]) == "manager" {
			return m
		}
	}
	t.Fatalf("Deployment %s has no container named manager", dep.GetName())
	return nil
}

// managerArgs returns the manager's flags as name -> value (last wins), e.g. "--leader-elect" -> "true".
func managerArgs(t *testing.T, objs objects) map[string]string {
	t.Helper()
	args := map[string]string{}
	for _, a := range strList(managerContainer(t, objs)["args"]) {
		name, value, _ := strings.Cut(a, "=")
		args[name] = value
	}
	return args
}

// chartAppVersion reads appVersion from Chart.yaml.
func chartAppVersion(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		AppVersion string `json:"appVersion"`
		Version    string `json:"version"`
	}
	if err := yaml.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	if c.AppVersion == "" || c.Version == "" {
		t.Fatalf("Chart.yaml needs version and appVersion: %+v", c)
	}
	return c.AppVersion
}
