package pipeline

import (
	"fmt"
	"strings"

	"github.com/bpo-dev/bpo/experiment/stats"
)

// Did the run improve on the initial model? Each measure is paired per evaluation prompt (the
// same prompts, the initial model's outcome against the final policy's) and its mean change gets
// a 95% bootstrap interval (stats.PairedBootstrap, one seed): an interval that excludes 0 is an
// improvement (or a loss) the prompt sample cannot explain.

// Change is one measure's mean change from the initial model to the final policy.
type Change struct {
	Measure string            `json:"measure"`
	CI      stats.BootstrapCI `json:"ci"`
}

// changeMeasures are the per-prompt outcomes compared: the greedy completion's and the mean sample's
// score under the gold annotator and under the held-out evaluator.
var changeMeasures = []struct {
	name string
	get  func(PromptOutcome) (float64, bool)
}{
	{"gold reward, greedy", func(o PromptOutcome) (float64, bool) { return o.GoldReward, true }},
	{"held-out score, greedy", func(o PromptOutcome) (float64, bool) { return o.HeldOut, true }},
	{"gold reward, samples", func(o PromptOutcome) (float64, bool) { return val(o.SampleGold), o.SampleGold != nil }},
	{"held-out score, samples", func(o PromptOutcome) (float64, bool) { return val(o.SampleHeldOut), o.SampleHeldOut != nil }},
}

// changes pairs the two evaluations prompt by prompt; a measure missing from either (results
// written before it existed) or evaluations of different prompts give no entry.
func changes(base, final *EvalResult) []Change {
	if len(base.PerPrompt) == 0 || len(base.PerPrompt) != len(final.PerPrompt) {
		return nil
	}
	var out []Change
	for _, m := range changeMeasures {
		a, b := make([]float64, len(final.PerPrompt)), make([]float64, len(base.PerPrompt))
		ok := true
		for i := range a {
			var okA, okB bool
			a[i], okA = m.get(final.PerPrompt[i])
			b[i], okB = m.get(base.PerPrompt[i])
			if p, q := final.PerPrompt[i].Prompt, base.PerPrompt[i].Prompt; !okA || !okB || p != q {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		ci, err := stats.PairedBootstrap([][]float64{a}, [][]float64{b}, stats.BootstrapResamples, 0.95, stats.BootstrapSeed)
		if err != nil {
			continue
		}
		out = append(out, Change{Measure: m.name, CI: ci})
	}
	return out
}

// changeSummary is one line: "change vs initial (95% CI, N prompts): gold reward, greedy +0.12
// [+0.08, +0.16]; ...".
func changeSummary(cs []Change) string {
	if len(cs) == 0 {
		return ""
	}
	parts := make([]string, len(cs))
	for i, c := range cs {
		parts[i] = c.Measure + " " + c.CI.Format("%.3f")
	}
	return fmt.Sprintf("change vs initial (95%% CI, %d prompts): %s", cs[0].CI.Prompts, strings.Join(parts, "; "))
}

// writeChanges is the report's table of changes.
func writeChanges(b *strings.Builder, cs []Change) {
	if len(cs) == 0 {
		return
	}
	fmt.Fprintf(b, "\n## Change from the initial model\n\nMean per-prompt change, final policy minus initial model, on the same %d prompts, "+
		"with a 95%% paired bootstrap interval (%d resamples). An interval that excludes 0 is a change the choice of prompts does not explain.\n\n",
		cs[0].CI.Prompts, cs[0].CI.Resamples)
	b.WriteString("| measure | change | 95% CI | excludes 0 |\n|---|---|---|---|\n")
	for _, c := range cs {
		fmt.Fprintf(b, "| %s | %+.3f | [%+.3f, %+.3f] | %v |\n", c.Measure, c.CI.Diff, c.CI.Lo, c.CI.Hi, c.CI.Excludes0())
	}
}
