package pipeline

import (
	"math"
	"strings"
	"testing"
)

func TestChanges(t *testing.T) {
	f := func(x float64) *float64 { return &x }
	outcomes := func(gold []float64, sample bool) []PromptOutcome {
		out := make([]PromptOutcome, len(gold))
		for i, g := range gold {
			out[i] = PromptOutcome{Prompt: string(rune('a' + i)), GoldReward: g, HeldOut: -g}
			if sample {
				out[i].SampleGold, out[i].SampleHeldOut = f(2*g), f(0)
			}
		}
		return out
	}
	base := &EvalResult{PerPrompt: outcomes([]float64{0, 0, 0, 0}, true)}
	final := &EvalResult{PerPrompt: outcomes([]float64{1, 1, 1, 1}, true)}
	cs := changes(base, final)
	want := []struct {
		measure  string
		diff     float64
		excludes bool
	}{
		{"gold reward, greedy", 1, true},
		{"held-out score, greedy", -1, true},
		{"gold reward, samples", 2, true},
		{"held-out score, samples", 0, false},
	}
	if len(cs) != len(want) {
		t.Fatalf("%d changes, want %d: %+v", len(cs), len(want), cs)
	}
	for i, w := range want {
		c := cs[i]
		// Every per-prompt difference is the same, so every resample has that mean.
		if c.Measure != w.measure || math.Abs(c.CI.Diff-w.diff) > 1e-12 || math.Abs(c.CI.Lo-w.diff) > 1e-12 ||
			math.Abs(c.CI.Hi-w.diff) > 1e-12 || c.CI.Excludes0() != w.excludes || c.CI.Prompts != 4 {
			t.Errorf("change %d = %+v, want %s %+g (excludes 0: %v)", i, c, w.measure, w.diff, w.excludes)
		}
	}
	if s := changeSummary(cs); !strings.Contains(s, "4 prompts") || !strings.Contains(s, "gold reward, greedy +1.000 [+1.000, +1.000]") {
		t.Errorf("summary %q", s)
	}

	// A spread of differences: the interval brackets the mean and is not degenerate.
	spread := &EvalResult{PerPrompt: outcomes([]float64{1, -0.5, 0.25, 2}, true)}
	cs = changes(base, spread)
	if c := cs[0]; math.Abs(c.CI.Diff-0.6875) > 1e-12 || !(c.CI.Lo < c.CI.Diff && c.CI.Diff < c.CI.Hi) {
		t.Errorf("spread: %+v", c.CI)
	}

	// Results without the sample outcomes give only the greedy measures; different prompts none.
	old := &EvalResult{PerPrompt: outcomes([]float64{0, 0, 0, 0}, false)}
	if cs := changes(old, final); len(cs) != 2 {
		t.Errorf("old baseline: %d changes, want the 2 greedy ones", len(cs))
	}
	other := &EvalResult{PerPrompt: outcomes([]float64{1, 1, 1, 1}, true)}
	other.PerPrompt[2].Prompt = "zz"
	if cs := changes(base, other); len(cs) != 0 {
		t.Errorf("different prompts: %d changes, want none", len(cs))
	}
	if cs := changes(base, &EvalResult{}); cs != nil || changeSummary(cs) != "" {
		t.Errorf("no outcomes: %+v", cs)
	}
}
