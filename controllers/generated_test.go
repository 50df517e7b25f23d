package controllers

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"
)

const controllerGenVersion = "v0.23.0"

// controllerGen finds controller-gen v0.23.0: $CONTROLLER_GEN, the project cache
// (${BPO_CACHE:-~/.cache/bpo}/bin), PATH, or (under CI) `hack/tools.sh controller-gen`, which
// installs it.
func controllerGen(t *testing.T) string {
	t.Helper()
	var candidates []string
	if p := os.Getenv("CONTROLLER_GEN"); p != "" {
		candidates = append(candidates, p)
	}
	cache := os.Getenv("BPO_CACHE")
	if cache == "" {
		if home, err := os.UserHomeDir(); err == nil {
			cache = filepath.Join(home, ".cache", "bpo")
		}
	}
	candidates = append(candidates, filepath.Join(cache, "bin", "controller-gen"))
	if p, err := exec.LookPath("controller-gen"); err == nil {
		candidates = append(candidates, p)
	}
	if os.Getenv("CI") != "" {
		if out, err := exec.Command(filepath.Join("..", "hack", "tools.sh"), "controller-gen").Output(); err == nil {
			candidates = append(candidates, strings.TrimSpace(string(out)))
		}
	}
	for _, p := range candidates {
		out, err := exec.Command(p, "--version").Output()
		if err == nil && strings.Contains(string(out), controllerGenVersion) {
			return p
		}
	}
	msg := "controller-gen " + controllerGenVersion + " not found (set CONTROLLER_GEN or run hack/tools.sh controller-gen)"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// TestGeneratedFilesUpToDate regenerates deepcopy, the CRD and the RBAC role into a temporary
// folder, with the same generators and options as `make generate manifests`, and fails if
// anything differs from the checked-in files.
func TestGeneratedFilesUpToDate(t *testing.T) {
	t.Parallel()
	cg := controllerGen(t)
	tmp := t.TempDir()
	run := func(args ...string) {
		cmd := exec.Command(cg, args...)
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("controller-gen %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("object", "paths=./api/...", "output:object:dir="+filepath.Join(tmp, "object"))
	run("crd", "rbac:roleName=bpo-manager-role", "paths=./api/...", "paths=./controllers/...",
		"output:crd:dir="+filepath.Join(tmp, "crd"), "output:rbac:dir="+filepath.Join(tmp, "rbac"))

	compareDir(t, filepath.Join(tmp, "object"), filepath.Join("..", "api", "v1alpha1"), "zz_generated.deepcopy.go", "make generate")
	compareDir(t, filepath.Join(tmp, "crd"), filepath.Join("..", "config", "crd", "bases"), "", "make manifests")
	compareDir(t, filepath.Join(tmp, "rbac"), filepath.Join("..", "config", "rbac"), "role.yaml", "make manifests")
}

// compareDir compares every file generated in got (or just only) with the checked-in one.
func compareDir(t *testing.T, got, want, only, fix string) {
	t.Helper()
	entries, err := os.ReadDir(got)
	must(t, err)
	var names []string
	for _, e := range entries {
		if only == "" || e.Name() == only {
			names = append(names, e.Name())
		}
	}
	if len(names) == 0 {
		t.Fatalf("controller-gen wrote nothing into %s", got)
	}
	if only == "" { // the whole folder is generated: no stale files either
		wantEntries, err := os.ReadDir(want)
		must(t, err)
		var have []string
		for _, e := range wantEntries {
			have = append(have, e.Name())
		}
		sort.Strings(have)
		if strings.Join(have, ",") != strings.Join(names, ",") {
			t.Errorf("%s holds %v, controller-gen generates %v: run `%s`", want, have, names, fix)
		}
	}
	for _, n := range names {
		g, err := os.ReadFile(filepath.Join(got, n))
		must(t, err)
		w, err := os.ReadFile(filepath.Join(want, n))
		if err != nil || !bytes.Equal(g, w) {
			t.Errorf("%s is out of date (%v): run `%s`", filepath.Join(want, n), err, fix)
		}
	}
}

// TestCRDSchemaDescriptions: every field of the spec has a description (what `kubectl explain`
// prints), and spec.trustRegion documents every schedule.
func TestCRDSchemaDescriptions(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join("..", "config", "crd", "bases", "alignment.bpo.dev_alignmentruns.yaml"))
	must(t, err)
	crd := &apiextensionsv1.CustomResourceDefinition{}
	must(t, yaml.UnmarshalStrict(b, crd))
	spec := crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"]
	var missing []string
	var walk func(path string, s apiextensionsv1.JSONSchemaProps)
	walk = func(path string, s apiextensionsv1.JSONSchemaProps) {
		if strings.TrimSpace(s.Description) == "" {
			missing = append(missing, path)
		}
		for name, p := range s.Properties {
			walk(path+"."+name, p)
		}
		// Items of a list of objects are documented by their fields; scalar items by the list.
		if s.Items != nil && s.Items.Schema != nil && s.Items.Schema.Type == "object" {
			for name, p := range s.Items.Schema.Properties {
				walk(path+"[]."+name, p)
			}
		}
	}
	walk("spec", spec)
	if len(missing) > 0 {
		sort.Strings(missing)
		t.Errorf("fields without a description (kubectl explain shows nothing): %v", missing)
	}
	tr := spec.Properties["trustRegion"]
	for _, want := range []string{"Behavior", "BPO", "Initial", "online DPO", "offline DPO", "EMA", "emaAlpha", "Fixed", "fixedCheckpoint", "phases"} {
		if !strings.Contains(tr.Description, want) {
			t.Errorf("spec.trustRegion description does not mention %q:\n%s", want, tr.Description)
		}
	}
	if ref := tr.Properties["reference"]; len(ref.Enum) != 4 || !strings.Contains(ref.Description, "EMA") {
		t.Errorf("spec.trustRegion.reference: %+v", ref)
	}
}

// TestExplainServedByAPIServer: the API server publishes the descriptions in its OpenAPI v3
// document, which is what `kubectl explain alignmentrun.spec.trustRegion` reads.
func TestExplainServedByAPIServer(t *testing.T) {
	requireEnv(t)
	t.Parallel()
	cs, err := kubernetes.NewForConfig(cfg)
	must(t, err)
	// The API server publishes a CRD's OpenAPI v3 document a little after the CRD is
	// established (a controller of its own): until then the path answers 404.
	var raw []byte
	eventually(t, waitTimeout, "the CRD's OpenAPI v3 document is served", func() string {
		var err error
		raw, err = cs.Discovery().RESTClient().Get().AbsPath("/openapi/v3/apis/alignment.bpo.dev/v1alpha1").DoRaw(context.Background())
		if err != nil {
			return err.Error()
		}
		return ""
	})
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]struct {
					Properties map[string]struct {
						Description string                     `json:"description"`
						Properties  map[string]json.RawMessage `json:"properties"`
					} `json:"properties"`
				} `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	must(t, json.Unmarshal(raw, &doc))
	s, ok := doc.Components.Schemas["dev.bpo.alignment.v1alpha1.AlignmentRun"]
	if !ok {
		t.Fatalf("no AlignmentRun schema in the OpenAPI document")
	}
	tr := s.Properties["spec"].Properties["trustRegion"]
	if !strings.Contains(tr.Description, "Behavior (default, BPO)") || len(tr.Properties) != 4 {
		t.Errorf("served spec.trustRegion: %q with %d properties", tr.Description, len(tr.Properties))
	}
}
