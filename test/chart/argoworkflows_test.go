package chart

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	alignv1 "github.com/bpo-dev/bpo/api/v1alpha1"
)

// jsonPathLabels lets a label selector read an object's fields by dotted path, as Argo
// Workflows' executor does (it implements labels.Labels over gjson paths) to evaluate a resource
// template's successCondition and failureCondition.
type jsonPathLabels map[string]any

func (o jsonPathLabels) lookup(path string) (any, bool) {
	var cur any = map[string]any(o)
	for _, p := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[p]; !ok {
			return nil, false
		}
	}
	return cur, true
}

func (o jsonPathLabels) Has(path string) bool { _, ok := o.lookup(path); return ok }

func (o jsonPathLabels) Get(path string) string {
	v, _ := o.lookup(path)
	return str(v)
}

func (o jsonPathLabels) Lookup(path string) (string, bool) {
	v, ok := o.lookup(path)
	return str(v), ok
}

// argoResult is what Argo's executor does with a polled object: failure first, then success
// (every requirement), else keep waiting.
func argoResult(t *testing.T, success, failure string, obj map[string]any) string {
	t.Helper()
	parse := func(what, cond string) labels.Requirements {
		sel, err := labels.Parse(cond)
		if err != nil {
			t.Fatalf("%s %q does not parse as Argo parses it (a label selector): %v", what, cond, err)
		}
		reqs, _ := sel.Requirements()
		return reqs
	}
	for _, r := range parse("failureCondition", failure) {
		if r.Matches(jsonPathLabels(obj)) {
			return "Failed"
		}
	}
	reqs := parse("successCondition", success)
	for _, r := range reqs {
		if !r.Matches(jsonPathLabels(obj)) {
			return "Waiting"
		}
	}
	if len(reqs) == 0 {
		return "Waiting"
	}
	return "Succeeded"
}

// argoWorkflow reads the Workflow of docs/gitops.md.
func argoWorkflow(t *testing.T) map[string]any {
	t.Helper()
	doc := readFile(t, gitopsDoc)
	var wf map[string]any
	for _, block := range strings.Split(doc, "```yaml\n")[1:] {
		body, _, _ := strings.Cut(block, "```")
		if strings.Contains(body, "kind: Workflow") {
			if err := yaml.Unmarshal([]byte(body), &wf); err != nil {
				t.Fatalf("the Workflow block of docs/gitops.md: %v", err)
			}
		}
	}
	if wf == nil || str(wf["apiVersion"]) != "argoproj.io/v1alpha1" {
		t.Fatalf("docs/gitops.md has no argoproj.io/v1alpha1 Workflow block")
	}
	return wf
}

// argoWorkflowCreatedRuns returns the AlignmentRuns the Workflow's resource templates create,
// in namespace ns (checkGitOpsContract dry-runs them on the CRD helm installed).
func argoWorkflowCreatedRuns(t *testing.T, ns string) objects {
	t.Helper()
	var out objects
	for _, tpl := range asList(field(argoWorkflow(t), "spec", "templates")) {
		res := mapOf(mapOf(tpl)["resource"])
		if res == nil || str(res["action"]) != "create" {
			continue
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(str(res["manifest"])), &u.Object); err != nil {
			t.Fatalf("template %s: %v", mapOf(tpl)["name"], err)
		}
		u.SetNamespace(ns)
		out = append(out, u)
	}
	if len(out) == 0 {
		t.Fatal("the Workflow of docs/gitops.md creates no AlignmentRun")
	}
	return out
}

// TestArgoWorkflowsWait: the Workflow of docs/gitops.md waits on status.state: its resource
// templates succeed on a Succeeded run, fail on a Failed one and wait otherwise, and their
// manifests are AlignmentRuns (the created one is dry-run by checkGitOpsContract).
func TestArgoWorkflowsWait(t *testing.T) {
	t.Parallel()
	wf := argoWorkflow(t)
	objWithState := func(state string) map[string]any {
		o := map[string]any{"apiVersion": "alignment.bpo.dev/v1alpha1", "kind": "AlignmentRun", "metadata": map[string]any{"name": "r", "generation": int64(1)}}
		if state != "" {
			o["status"] = map[string]any{"observedGeneration": int64(1), "state": state}
		}
		return o
	}
	want := map[alignv1.RunState]string{
		alignv1.StatePending: "Waiting", alignv1.StateRunning: "Waiting", alignv1.StateSuspended: "Waiting",
		alignv1.StateSucceeded: "Succeeded", alignv1.StateFailed: "Failed",
	}
	resources := 0
	for _, tpl := range asList(field(wf, "spec", "templates")) {
		res := mapOf(mapOf(tpl)["resource"])
		if res == nil {
			continue
		}
		resources++
		name := str(mapOf(tpl)["name"])
		success, failure := str(res["successCondition"]), str(res["failureCondition"])
		for _, st := range alignv1.RunStates {
			if got := argoResult(t, success, failure, objWithState(string(st))); got != want[st] {
				t.Errorf("template %s on a %s run: %s, want %s", name, st, got, want[st])
			}
		}
		if got := argoResult(t, success, failure, objWithState("")); got != "Waiting" {
			t.Errorf("template %s on a run without status: %s, want Waiting", name, got)
		}

		manifest := str(res["manifest"])
		run := &alignv1.AlignmentRun{}
		if err := yaml.UnmarshalStrict([]byte(manifest), run); err != nil || run.Kind != "AlignmentRun" {
			t.Errorf("template %s: the manifest is not an AlignmentRun (%v):\n%s", name, err, manifest)
		}
	}
	if resources < 2 {
		t.Errorf("the Workflow has %d resource templates, want the create-and-wait and the wait-for-run ones", resources)
	}
}
