package pipeline

import (
	"slices"
	"strings"
	"testing"

	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"
)

const zeroBase = "kind: AlignmentRun\nmetadata: {name: x}\nspec:\n  model: {builtin: tiny-reviews}\n  data: {builtin: reviews}\n  budget: {pairs: 64}\n  workspace: {path: ws}\n"

// TestExplicitZeroIsNotADefault: `phases: 0` or `members: 0` (or any defaulted count set to 0)
// is an error naming the field and the fix, as the API server's minimum makes it; an absent
// field still takes its default.
func TestExplicitZeroIsNotADefault(t *testing.T) {
	for _, tc := range []struct{ set, want string }{
		{"  trustRegion: {phases: 0}\n", "spec.trustRegion.phases: Invalid value: 0: must be between 1 and 1000; 0 does not mean the default: remove the field for the default (2)"},
		{"  ensemble: {members: 0}\n", "spec.ensemble.members: Invalid value: 0: must be between 1 and 16; 0 does not mean the default: remove the field for the default (5)"},
		{"  sampler: {maxNewTokens: 0}\n", "spec.sampler.maxNewTokens: Invalid value: 0: must be between 1 and 8192; 0 does not mean the default: remove the field for the default (32)"},
	} {
		_, err := DecodeRun([]byte(zeroBase + tc.set))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v\nwant an error containing %q", strings.TrimSpace(tc.set), err, tc.want)
		}
	}
	ar, err := DecodeRun([]byte(zeroBase))
	if err != nil {
		t.Fatal(err)
	}
	if s := ar.Spec; s.TrustRegion.Phases != 2 || s.Ensemble.Members != 5 || s.Sampler.MaxNewTokens != 32 {
		t.Errorf("absent fields: phases %d members %d maxNewTokens %d, want the defaults 2, 5, 32", s.TrustRegion.Phases, s.Ensemble.Members, s.Sampler.MaxNewTokens)
	}
}

// TestSeedZeroIsASeed: `seed: 0` is its own seed, not seed 1, and survives the trip through
// run.yaml (the controller renders the spec for the stage pods); absent is 1; negative is an error.
func TestSeedZeroIsASeed(t *testing.T) {
	seedOf := func(doc string) uint64 {
		t.Helper()
		ar, err := DecodeRun([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		out, err := yaml.Marshal(ar)
		if err != nil {
			t.Fatal(err)
		}
		if ar, err = DecodeRun(out); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		run, err := NewRun(ar)
		if err != nil {
			t.Fatal(err)
		}
		return run.Seed
	}
	for doc, want := range map[string]uint64{zeroBase: 1, zeroBase + "  seed: 0\n": 0, zeroBase + "  seed: 1\n": 1, zeroBase + "  seed: 7\n": 7} {
		if got := seedOf(doc); got != want {
			t.Errorf("%q: seed %d, want %d", doc[len(zeroBase):], got, want)
		}
	}
	if _, err := DecodeRun([]byte(zeroBase + "  seed: -1\n")); err == nil || !strings.Contains(err.Error(), "spec.seed: Invalid value: -1: must be 0 or more") {
		t.Errorf("seed -1: %v", err)
	}

	// and the seeds draw different prompt orders
	order := func(seed int64) []string {
		b := makeRun("seed")
		b.ar.Spec.Seed = ptr.To(seed)
		e := b.Env(t, t.TempDir())
		p, err := e.PhasePrompts(1)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	if slices.Equal(order(0), order(1)) {
		t.Error("seed 0 and seed 1 sample the same prompts in the same order")
	}
}
