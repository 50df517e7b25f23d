package chart

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/VictoriaMetrics/metricsql"

	"github.com/bpo-dev/bpo/controllers"
)

// dashboard is the part of a Grafana dashboard the checks read.
type dashboard struct {
	UID           string `json:"uid"`
	Title         string `json:"title"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Datasource *datasourceRef  `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
	Panels []dashboardPanel `json:"panels"`
}

type dashboardPanel struct {
	ID         int                       `json:"id"`
	Type       string                    `json:"type"`
	Title      string                    `json:"title"`
	Datasource *datasourceRef            `json:"datasource"`
	GridPos    *struct{ X, Y, W, H int } `json:"gridPos"`
	Targets    []struct {
		RefID      string         `json:"refId"`
		Expr       string         `json:"expr"`
		Datasource *datasourceRef `json:"datasource"`
	} `json:"targets"`
	Panels []dashboardPanel `json:"panels"` // collapsed rows hold their panels
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// grafanaVar matches Grafana template variables: $name, ${name}, ${name:format}, [[name]].
var grafanaVar = regexp.MustCompile(`\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]`)

// promQL substitutes Grafana's variables the way Grafana would before sending a query: interval
// variables ($__rate_interval, $__range, ...) become a duration, the others a label value.
func promQL(expr string) string {
	return grafanaVar.ReplaceAllStringFunc(expr, func(m string) string {
		if strings.Contains(m, "__") {
			return "5m"
		}
		return "x"
	})
}

var labelValues = regexp.MustCompile(`^\s*label_values\((.*),\s*(\w+)\s*\)\s*$`)

// queryProblems parses one PromQL expression and checks that every metric it selects is
// registered by the controller, and every label it matches or groups by is one of that metric's.
// The parser is MetricsQL's (a superset of PromQL with few dependencies; Prometheus's own parser
// pulls in its storage and cloud SDKs); the one relaxation that matters for Prometheus, a rollup
// function without a [range], is checked here.
func queryProblems(expr string, families map[string]controllers.MetricFamily) []string {
	var problems []string
	errorf := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	ast, err := metricsql.Parse(promQL(expr))
	if err != nil {
		return []string{fmt.Sprintf("%q is not PromQL: %v", expr, err)}
	}
	// labelsOf returns the labels of the family a selected series name belongs to.
	labelsOf := func(name string) ([]string, bool) {
		if f, ok := families[name]; ok && f.Type != controllers.TypeHistogram {
			return f.Labels, true
		}
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if f, ok := families[strings.TrimSuffix(name, suffix)]; ok && strings.HasSuffix(name, suffix) && f.Type == controllers.TypeHistogram {
				if suffix == "_bucket" {
					return append(slices.Clone(f.Labels), "le"), true
				}
				return f.Labels, true
			}
		}
		return nil, false
	}
	// selectors returns the metric name and the other matched labels of every selector in e.
	selectors := func(e metricsql.Expr) (out []struct {
		name    string
		matched []string
	}) {
		metricsql.VisitAll(e, func(node metricsql.Expr) {
			me, ok := node.(*metricsql.MetricExpr)
			if !ok {
				return
			}
			for _, group := range me.LabelFilterss {
				sel := struct {
					name    string
					matched []string
				}{}
				for _, f := range group {
					if f.Label == "__name__" && !f.IsRegexp && !f.IsNegative {
						sel.name = f.Value
					} else {
						sel.matched = append(sel.matched, f.Label)
					}
				}
				out = append(out, sel)
			}
		})
		return out
	}
	sels := selectors(ast)
	if len(sels) == 0 {
		errorf("%q selects no metric", expr)
	}
	for _, sel := range sels {
		have, ok := labelsOf(sel.name)
		if !ok {
			errorf("%q selects %q, which the controller does not register (controllers.Metrics())", expr, sel.name)
			continue
		}
		for _, l := range sel.matched {
			if !slices.Contains(have, l) {
				errorf("%q matches label %q, which %s does not have (labels %v)", expr, l, sel.name, have)
			}
		}
	}
	metricsql.VisitAll(ast, func(node metricsql.Expr) {
		switch n := node.(type) {
		case *metricsql.AggrFuncExpr:
			if n.Modifier.Op != "by" {
				return
			}
			var inner []string
			for _, a := range n.Args {
				for _, sel := range selectors(a) {
					l, _ := labelsOf(sel.name)
					inner = append(inner, l...)
				}
			}
			for _, g := range n.Modifier.Args {
				if !slices.Contains(inner, g) {
					errorf("%q groups by %q, which none of its metrics has", expr, g)
				}
			}
		case *metricsql.FuncExpr:
			if !metricsql.IsRollupFunc(n.Name) {
				return
			}
			for _, a := range n.Args {
				if r, ok := a.(*metricsql.RollupExpr); ok && r.Window != nil {
					return
				}
			}
			errorf("%q: %s() needs a range vector (e.g. [5m]) in PromQL", expr, n.Name)
		}
	})
	return problems
}

func checkQuery(t *testing.T, where, expr string, families map[string]controllers.MetricFamily) {
	t.Helper()
	for _, p := range queryProblems(expr, families) {
		t.Errorf("%s: %s", where, p)
	}
}

// checkDashboard checks the dashboard ConfigMap of a rendering: the sidecar label, valid JSON,
// the panels' layout and data source, and every query against the controller's metrics.
func checkDashboard(t *testing.T, objs objects) {
	t.Helper()
	cm := objs.get("ConfigMap", releaseNamespace, "bpo-operator-dashboards")
	if cm == nil {
		t.Fatalf("no ConfigMap bpo-operator-dashboards: %s", objs)
	}
	if cm.GetLabels()["grafana_dashboard"] != "1" {
		t.Errorf("dashboard ConfigMap labels %v lack the sidecar's grafana_dashboard=1", cm.GetLabels())
	}
	data := mapOf(cm.Object["data"])
	file := filepath.Join(chartDir, "files", "dashboards", "bpo-alignmentruns.json")
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	raw := str(data["bpo-alignmentruns.json"])
	if raw != string(want) {
		t.Fatalf("the ConfigMap's bpo-alignmentruns.json differs from %s (keys %v)", file, keys(data))
	}
	if !json.Valid([]byte(raw)) {
		t.Fatal("the dashboard is not valid JSON")
	}
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(raw))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("decoding the dashboard: %v", err)
	}
	if d.UID == "" || d.Title == "" || d.SchemaVersion < 36 {
		t.Errorf("dashboard uid %q title %q schemaVersion %d", d.UID, d.Title, d.SchemaVersion)
	}

	families := map[string]controllers.MetricFamily{}
	for _, f := range controllers.Metrics() {
		families[f.Name] = f
	}
	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
		if v.Type != "query" {
			continue
		}
		// The query is a string or {query, refId}.
		var q struct{ Query string }
		if err := json.Unmarshal(v.Query, &q); err != nil {
			_ = json.Unmarshal(v.Query, &q.Query)
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(<selector>, <label>)", v.Name, q.Query)
			continue
		}
		checkQuery(t, "variable "+v.Name, m[1], families)
		checkQuery(t, "variable "+v.Name, fmt.Sprintf(`count by (%s) (%s)`, m[2], m[1]), families)
		if v.Datasource == nil || v.Datasource.UID != "${datasource}" {
			t.Errorf("variable %s: datasource %+v, want the ${datasource} variable", v.Name, v.Datasource)
		}
	}
	if !vars["datasource"] {
		t.Error("no datasource variable: the dashboard would be tied to one Prometheus")
	}

	ids := map[int]bool{}
	queries := 0
	var walk func(ps []dashboardPanel)
	walk = func(ps []dashboardPanel) {
		for _, p := range ps {
			where := fmt.Sprintf("panel %d %q", p.ID, p.Title)
			if ids[p.ID] || p.ID == 0 {
				t.Errorf("%s: missing or duplicate id", where)
			}
			ids[p.ID] = true
			if p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.H == 0 || p.GridPos.X+p.GridPos.W > 24 {
				t.Errorf("%s: gridPos %+v", where, p.GridPos)
			}
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if p.Datasource == nil || p.Datasource.UID != "${datasource}" || len(p.Targets) == 0 {
				t.Errorf("%s: datasource %+v, %d targets; want queries on ${datasource}", where, p.Datasource, len(p.Targets))
			}
			for _, tg := range p.Targets {
				queries++
				for _, m := range grafanaVar.FindAllStringSubmatch(tg.Expr, -1) {
					name := m[1] + m[2] + m[3]
					if !strings.HasPrefix(name, "__") && !vars[name] {
						t.Errorf("%s: %q uses $%s, which is not a dashboard variable", where, tg.Expr, name)
					}
				}
				checkQuery(t, where+" target "+tg.RefID, tg.Expr, families)
			}
		}
	}
	walk(d.Panels)
	if queries < 10 {
		t.Errorf("only %d queries in the dashboard", queries)
	}
}

// TestDashboardQueryCheck: the query check itself rejects what it must (a check that cannot fail
// proves nothing).
func TestDashboardQueryCheck(t *testing.T) {
	t.Parallel()
	families := map[string]controllers.MetricFamily{}
	for _, f := range controllers.Metrics() {
		families[f.Name] = f
	}
	for expr, bad := range map[string]bool{
		`sum by (state) (bpo_alignmentruns{namespace=~"$namespace"})`:                                                          false,
		`histogram_quantile(0.9, sum by (le, stage) (rate(bpo_alignmentrun_stage_duration_seconds_bucket[$__rate_interval])))`: false,
		`bpo_alignmentrun_win_rate{namespace=~"${namespace}", name=~"$run"}`:                                                   false,
		`bpo_alignmentrun_winrate`:                                         true, // not registered
		`bpo_alignmentruns{condition="Running"}`:                           true, // no such label
		`sum by (stage) (bpo_alignmentruns)`:                               true, // grouping by a label it lacks
		`bpo_alignmentruns_bucket`:                                         true, // not a histogram
		`rate(bpo_alignmentrun_stage_duration_seconds_bucket{le="1"}[5m])`: false,
		`rate(bpo_alignmentrun_stage_duration_seconds_count{le="1"}[5m])`:  true, // le only on _bucket
		`sum(rate(bpo_alignmentrun_stage_retries_total[5m])`:               true, // not PromQL
		`1 + 1`: true, // no metric
	} {
		if problems := queryProblems(expr, families); (len(problems) > 0) != bad {
			t.Errorf("%q: problems %q, want some: %v", expr, problems, bad)
		}
	}
}
