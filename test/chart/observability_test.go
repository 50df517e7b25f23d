package chart

import (
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/bpo-dev/bpo/controllers"
)

// TestObservabilityMetricsTable: the metrics table of docs/observability.md lists exactly the
// families the controller registers (controllers.Metrics()), with their types and labels.
func TestObservabilityMetricsTable(t *testing.T) {
	t.Parallel()
	doc := readFile(t, filepath.Join(repoRoot, "docs", "observability.md"))
	type row struct{ typ, labels string }
	documented := map[string]row{}
	for _, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(line, "| `bpo_") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) < 4 {
			t.Errorf("metrics table row %q has %d cells", line, len(cells))
			continue
		}
		name := strings.Trim(strings.TrimSpace(cells[0]), "`")
		var labels []string
		for _, m := range backticked.FindAllStringSubmatch(cells[2], -1) {
			labels = append(labels, m[1])
		}
		documented[name] = row{strings.TrimSpace(cells[1]), strings.Join(labels, ",")}
	}
	registered := map[string]bool{}
	for _, f := range controllers.Metrics() {
		registered[f.Name] = true
		got, ok := documented[f.Name]
		if !ok {
			t.Errorf("docs/observability.md does not list %s", f.Name)
			continue
		}
		if want := (row{f.Type, strings.Join(f.Labels, ",")}); got != want {
			t.Errorf("docs/observability.md: %s is %+v, the controller registers %+v", f.Name, got, want)
		}
	}
	for name := range documented {
		if !registered[name] {
			t.Errorf("docs/observability.md lists %s, which the controller does not register", name)
		}
	}
	// Metric names anywhere else on the page exist too.
	for _, m := range regexp.MustCompile("`(bpo_[a-z_]+)").FindAllStringSubmatch(doc, -1) {
		if !registered[m[1]] && !slices.ContainsFunc(controllers.Metrics(), func(f controllers.MetricFamily) bool {
			return f.Type == controllers.TypeHistogram && strings.HasPrefix(m[1], f.Name)
		}) {
			t.Errorf("docs/observability.md mentions %s, which the controller does not register", m[1])
		}
	}
}
