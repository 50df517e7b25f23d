package chart

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	lua "github.com/yuin/gopher-lua"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite config/argocd/argocd-cm-patch.yaml from the Lua files")

var argocdDir = filepath.Join(repoRoot, "config", "argocd")

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// runArgoLua runs a health or action script the way Argo CD does: a gopher-lua state with only
// the base, table, string and math libraries (Argo CD's default sandbox), the resource as the
// global `obj`, and the script's return value as the result.
func runArgoLua(t *testing.T, script string, obj map[string]any) any {
	t.Helper()
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer L.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.StringLibName, lua.OpenString},
		{lua.MathLibName, lua.OpenMath},
	} {
		L.Push(L.NewFunction(lib.open))
		L.Push(lua.LString(lib.name))
		L.Call(1, 0)
	}
	L.SetGlobal("obj", toLua(L, obj))
	if err := L.DoString(script); err != nil {
		t.Fatalf("lua: %v", err)
	}
	return fromLua(L.Get(-1))
}

func toLua(L *lua.LState, v any) lua.LValue {
	switch x := v.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(x)
	case string:
		return lua.LString(x)
	case float64:
		return lua.LNumber(x)
	case int64:
		return lua.LNumber(x)
	case int:
		return lua.LNumber(x)
	case []any:
		tbl := L.NewTable()
		for i, e := range x {
			tbl.RawSetInt(i+1, toLua(L, e))
		}
		return tbl
	case map[string]any:
		tbl := L.NewTable()
		for k, e := range x {
			tbl.RawSetString(k, toLua(L, e))
		}
		return tbl
	default:
		panic(fmt.Sprintf("toLua: %T", v))
	}
}

// fromLua converts back: tables with only 1..n keys become lists, other tables maps.
func fromLua(v lua.LValue) any {
	switch x := v.(type) {
	case *lua.LNilType:
		return nil
	case lua.LBool:
		return bool(x)
	case lua.LString:
		return string(x)
	case lua.LNumber:
		return float64(x)
	case *lua.LTable:
		n := x.MaxN()
		m := map[string]any{}
		var list []any
		x.ForEach(func(k, val lua.LValue) {
			if ks, ok := k.(lua.LString); ok {
				m[string(ks)] = fromLua(val)
			}
		})
		if n > 0 && len(m) == 0 {
			for i := 1; i <= n; i++ {
				list = append(list, fromLua(x.RawGetInt(i)))
			}
			return list
		}
		return m
	default:
		return v.String()
	}
}

func yamlObj(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("%v in\n%s", err, s)
	}
	return m
}

// run builds an AlignmentRun object with the given generation and status YAML ("" = no status).
func runObj(t *testing.T, generation int, spec, status string) map[string]any {
	t.Helper()
	obj := yamlObj(t, fmt.Sprintf("apiVersion: alignment.bpo.dev/v1alpha1\nkind: AlignmentRun\nmetadata: {name: r, namespace: ns, generation: %d}\n", generation))
	if generation == 0 {
		delete(mapOf(obj["metadata"]), "generation")
	}
	obj["spec"] = map[string]any{}
	if spec != "" {
		obj["spec"] = yamlObj(t, spec)
	}
	if status != "" {
		obj["status"] = yamlObj(t, status)
	}
	return obj
}

const (
	condRunning = `{type: Running, status: "True", reason: StageRunning, message: "phase 1/2: stage sample, attempt 0"}`
	condNotRun  = `{type: Running, status: "False", reason: Pending, message: "the run has not started"}`
	condSucc    = `{type: Succeeded, status: "True", reason: Succeeded, message: "all 2 phases completed"}`
	condNoSucc  = `{type: Succeeded, status: "False", reason: InProgress, message: ""}`
	condFail    = `{type: Failed, status: "True", reason: StageFailed, message: "phase 2 train failed 3 times: out of memory"}`
	condDead    = `{type: Failed, status: "True", reason: DeadlineExceeded, message: "activeDeadlineSeconds 3600 exceeded"}`
	condNoFail  = `{type: Failed, status: "False", reason: InProgress, message: ""}`
	condSusp    = `{type: Suspended, status: "True", reason: Suspended, message: "spec.suspend is true"}`
	condNoSusp  = `{type: Suspended, status: "False", reason: Resumed, message: ""}`
)

func status(observed int, conds ...string) string {
	s := fmt.Sprintf("{observedGeneration: %d, progress: 1/2, stage: train, conditions: [%s]}", observed, strings.Join(conds, ", "))
	if observed == 0 {
		s = fmt.Sprintf("{conditions: [%s]}", strings.Join(conds, ", "))
	}
	return s
}

// healthCase is an AlignmentRun and the Argo CD health it must get; the Flux CEL expressions of
// docs/gitops.md are checked on the same table (TestFluxHealthCheckExprs).
type healthCase struct {
	name       string
	obj        map[string]any
	status     string // Argo CD health
	msgContain string
	notLive    bool // not an object read from the API server (no metadata.generation)
}

func healthCases(t *testing.T) []healthCase {
	return []healthCase{
		{name: "no status yet", obj: runObj(t, 1, "", ""), status: "Progressing", msgContain: "Waiting for the controller"},
		{name: "empty status", obj: runObj(t, 1, "", "{}"), status: "Progressing", msgContain: "observe generation 1"},
		{name: "running", obj: runObj(t, 1, "", status(1, condRunning, condNoSucc, condNoFail, condNoSusp)), status: "Progressing", msgContain: "StageRunning: phase 1/2: stage sample"},
		{name: "pending, no Running=True", obj: runObj(t, 1, "", status(1, condNotRun, condNoSucc, condNoFail, condNoSusp)), status: "Progressing", msgContain: "Pending"},
		{name: "no conditions", obj: runObj(t, 1, "", "{observedGeneration: 1}"), status: "Progressing", msgContain: "Waiting for the run to start"},
		{name: "succeeded", obj: runObj(t, 2, "", "{observedGeneration: 2, progress: 2/2, stage: eval, latestWinRate: '0.734', conditions: ["+condNotRun+", "+condSucc+", "+condNoFail+", "+condNoSusp+"]}"),
			status: "Healthy", msgContain: "win rate 0.734"},
		{name: "failed stage", obj: runObj(t, 1, "", status(1, condFail, condNoSucc, condNoSusp)), status: "Degraded", msgContain: "StageFailed: phase 2 train failed 3 times"},
		{name: "deadline exceeded", obj: runObj(t, 1, "", status(1, condDead, condNoSucc)), status: "Degraded", msgContain: "DeadlineExceeded"},
		{name: "suspended", obj: runObj(t, 3, "{suspend: true}", status(3, condNotRun, condSusp, condNoSucc, condNoFail)), status: "Suspended", msgContain: "spec.suspend is true"},
		{name: "failed wins over suspended", obj: runObj(t, 3, "", status(3, condSusp, condFail)), status: "Degraded", msgContain: "StageFailed"},
		// A spec change the controller has not seen yet: whatever the conditions say, they are stale.
		{name: "stale succeeded", obj: runObj(t, 3, "", status(2, condSucc)), status: "Progressing", msgContain: "observe generation 3 (status is of generation 2)"},
		{name: "stale failed", obj: runObj(t, 5, "", status(4, condFail)), status: "Progressing", msgContain: "generation 5"},
		{name: "stale suspended", obj: runObj(t, 4, "{suspend: false}", status(3, condSusp)), status: "Progressing", msgContain: "generation 4"},
		{name: "status without observedGeneration", obj: runObj(t, 1, "", status(0, condSucc)), status: "Progressing", msgContain: "generation 1"},
		// Objects without metadata.generation (e.g. rendered, not live) are judged by their conditions.
		{name: "no generation", obj: runObj(t, 0, "", status(0, condSucc)), status: "Healthy", msgContain: "Succeeded", notLive: true},
	}
}

// TestArgoCDHealth runs config/argocd/health.lua on a table of AlignmentRuns.
func TestArgoCDHealth(t *testing.T) {
	t.Parallel()
	script := readFile(t, filepath.Join(argocdDir, "health.lua"))
	for _, c := range healthCases(t) {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			hs := mapOf(runArgoLua(t, script, c.obj))
			if hs == nil {
				t.Fatalf("health.lua returned no table")
			}
			if str(hs["status"]) != c.status || !strings.Contains(str(hs["message"]), c.msgContain) {
				t.Errorf("got %s %q, want %s with %q", hs["status"], hs["message"], c.status, c.msgContain)
			}
			for k := range hs {
				if k != "status" && k != "message" {
					t.Errorf("unexpected key %q in the health result", k)
				}
			}
		})
	}
}

// TestArgoCDActions runs the discovery and the suspend/resume actions.
func TestArgoCDActions(t *testing.T) {
	t.Parallel()
	discovery := readFile(t, filepath.Join(argocdDir, "actions", "discovery.lua"))
	suspend := readFile(t, filepath.Join(argocdDir, "actions", "suspend", "action.lua"))
	resume := readFile(t, filepath.Join(argocdDir, "actions", "resume", "action.lua"))

	disabled := func(actions any, name string) bool {
		a := mapOf(mapOf(actions)[name])
		if a == nil {
			t.Fatalf("discovery offers no %q action: %v", name, actions)
		}
		return a["disabled"] == true
	}
	cases := []struct {
		name                  string
		obj                   map[string]any
		suspendOff, resumeOff bool
	}{
		{"running", runObj(t, 1, "{suspend: false}", status(1, condRunning)), false, true},
		{"no suspend field", runObj(t, 1, "", status(1, condRunning)), false, true},
		{"no status", runObj(t, 1, "", ""), false, true},
		{"suspended", runObj(t, 2, "{suspend: true}", status(2, condSusp)), true, false},
		{"succeeded", runObj(t, 1, "{suspend: false}", status(1, condSucc)), true, true},
		{"failed", runObj(t, 1, "", status(1, condFail)), true, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			actions := runArgoLua(t, discovery, c.obj)
			if got := disabled(actions, "suspend"); got != c.suspendOff {
				t.Errorf("suspend disabled=%v, want %v", got, c.suspendOff)
			}
			if got := disabled(actions, "resume"); got != c.resumeOff {
				t.Errorf("resume disabled=%v, want %v", got, c.resumeOff)
			}
		})
	}

	spec := "{suspend: false, backoffLimit: 2, loss: {type: DPO, beta: '0.1'}, sampler: {parallelism: 2}}"
	for script, want := range map[string]bool{suspend: true, resume: false} {
		obj := runObj(t, 1, spec, status(1, condRunning))
		out := mapOf(runArgoLua(t, script, obj))
		if field(out, "spec", "suspend") != want {
			t.Errorf("action set spec.suspend=%v, want %v", field(out, "spec", "suspend"), want)
		}
		// Nothing else changes.
		delete(mapOf(out["spec"]), "suspend")
		wantSpec := yamlObj(t, spec)
		delete(wantSpec, "suspend")
		if !reflect.DeepEqual(normalize(t, out["spec"]), normalize(t, wantSpec)) || !reflect.DeepEqual(normalize(t, out["status"]), normalize(t, obj["status"])) {
			t.Errorf("the action changed more than spec.suspend:\n got %v\nwant %v", out["spec"], wantSpec)
		}
	}
	// Also on an object without spec.
	out := mapOf(runArgoLua(t, suspend, map[string]any{"apiVersion": "alignment.bpo.dev/v1alpha1", "kind": "AlignmentRun", "metadata": map[string]any{"name": "r"}}))
	if field(out, "spec", "suspend") != true {
		t.Errorf("suspend on an object without spec: %v", out)
	}
}

// argocdCMPatch renders config/argocd/argocd-cm-patch.yaml from the Lua files.
func argocdCMPatch(t *testing.T) string {
	t.Helper()
	indent := func(path string, n int) string {
		var b strings.Builder
		for _, line := range strings.SplitAfter(readFile(t, path), "\n") {
			if strings.TrimSpace(line) == "" {
				b.WriteString(strings.TrimLeft(line, " \t"))
				continue
			}
			b.WriteString(strings.Repeat(" ", n) + line)
		}
		return b.String()
	}
	var b bytes.Buffer
	b.WriteString(`# Argo CD customizations for AlignmentRun (alignment.bpo.dev/v1alpha1): a health check and the
# suspend/resume actions. The Lua bodies are copies of health.lua and actions/ next to this file
# (test/chart checks they match; ` + "`go test ./test/chart -run TestArgoCDConfigMapPatch -update`" + `
# rewrites this file). Merge it into argocd-cm:
#
#   kubectl -n argocd patch configmap argocd-cm --type merge --patch-file config/argocd/argocd-cm-patch.yaml
#
# or list it under ` + "`patches:`" + ` of the kustomization that installs Argo CD.
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
  namespace: argocd
data:
  resource.customizations.health.alignment.bpo.dev_AlignmentRun: |
`)
	b.WriteString(indent(filepath.Join(argocdDir, "health.lua"), 4))
	b.WriteString("  resource.customizations.actions.alignment.bpo.dev_AlignmentRun: |\n    discovery.lua: |\n")
	b.WriteString(indent(filepath.Join(argocdDir, "actions", "discovery.lua"), 6))
	b.WriteString("    definitions:\n      - name: suspend\n        action.lua: |\n")
	b.WriteString(indent(filepath.Join(argocdDir, "actions", "suspend", "action.lua"), 10))
	b.WriteString("      - name: resume\n        action.lua: |\n")
	b.WriteString(indent(filepath.Join(argocdDir, "actions", "resume", "action.lua"), 10))
	return b.String()
}

// TestArgoCDConfigMapPatch: the argocd-cm snippet carries exactly the tested Lua files under
// the keys Argo CD reads (resource.customizations.{health,actions}.<group>_<kind>).
func TestArgoCDConfigMapPatch(t *testing.T) {
	path := filepath.Join(argocdDir, "argocd-cm-patch.yaml")
	want := argocdCMPatch(t)
	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if got := readFile(t, path); got != want {
		t.Errorf("config/argocd/argocd-cm-patch.yaml is out of date; run go test ./test/chart -run TestArgoCDConfigMapPatch -update\n%s", firstDiff(got, want))
	}

	// Parsed the way Argo CD parses it.
	cm := readManifests(t, path).one(t, "ConfigMap")
	data := mapOf(cm.Object["data"])
	var keys []string
	for k := range data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	wantKeys := []string{"resource.customizations.actions.alignment.bpo.dev_AlignmentRun", "resource.customizations.health.alignment.bpo.dev_AlignmentRun"}
	if !reflect.DeepEqual(keys, wantKeys) {
		t.Fatalf("argocd-cm keys %v, want %v", keys, wantKeys)
	}
	if str(data[wantKeys[1]]) != readFile(t, filepath.Join(argocdDir, "health.lua")) {
		t.Errorf("the health key does not hold health.lua")
	}
	var actions struct {
		Discovery   string `json:"discovery.lua"`
		Definitions []struct {
			Name   string `json:"name"`
			Action string `json:"action.lua"`
		} `json:"definitions"`
	}
	if err := yaml.UnmarshalStrict([]byte(str(data[wantKeys[0]])), &actions); err != nil {
		t.Fatalf("the actions key: %v", err)
	}
	if actions.Discovery != readFile(t, filepath.Join(argocdDir, "actions", "discovery.lua")) || len(actions.Definitions) != 2 {
		t.Errorf("the actions key does not hold discovery.lua and two definitions: %+v", actions)
	}
	for _, d := range actions.Definitions {
		if d.Action != readFile(t, filepath.Join(argocdDir, "actions", d.Name, "action.lua")) {
			t.Errorf("action %s differs from actions/%s/action.lua", d.Name, d.Name)
		}
	}
}
