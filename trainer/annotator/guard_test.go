package annotator

import (
	"crypto/sha256"
	"os"
	"strings"
	"testing"
)

// humanPairs returns fixed sets of pairs of fluent human text from the vendored reviews data, each
// pair (2i, 2i+1) of a set's list:
//
//	continuations  the training UCI sentences after their opening (2-4 words, the rule of
//	               hack/vendor-data.go), consecutive in file order
//	same-opening   the same continuations, paired only with one of the same opening (two human
//	               answers to one prompt, like a preference pair)
//	references     the held-out reference continuations of validation.jsonl and eval.jsonl
//	brown          the Brown sentences of pretrain.txt (the lines that are not UCI sentences)
func humanPairs(t *testing.T) map[string][]string {
	t.Helper()
	sets := map[string][]string{}
	sft := readJSONL[labelled](t, "../task/reviews/data/sft.jsonl")
	uci := map[string]bool{}
	byOpening := map[string][]string{}
	var openings []string
	for _, r := range sft {
		uci[r.Text] = true
		opening, cont, ok := splitOpening(r.Text)
		if !ok {
			continue
		}
		sets["continuations"] = append(sets["continuations"], cont)
		key := strings.ToLower(opening)
		if byOpening[key] == nil {
			openings = append(openings, key)
		}
		byOpening[key] = append(byOpening[key], cont)
	}
	for _, o := range openings { // first-occurrence order
		g := byOpening[o]
		sets["same-opening"] = append(sets["same-opening"], g[:len(g)/2*2]...)
	}
	type example struct{ Prompt, Reference string }
	for _, f := range []string{"validation", "eval"} {
		for _, e := range readJSONL[example](t, "../task/reviews/data/"+f+".jsonl") {
			sets["references"] = append(sets["references"], e.Reference)
		}
	}
	raw, err := os.ReadFile("../task/reviews/data/pretrain.txt")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		if !uci[l] {
			sets["brown"] = append(sets["brown"], l)
		}
	}
	for name, xs := range sets {
		if len(xs) < 100 {
			t.Fatalf("%s: only %d texts", name, len(xs))
		}
	}
	return sets
}

// splitOpening splits text into its opening (k whitespace words, k in {2, 3, 4} from the SHA-256
// of the text, shortened to leave at least one word) and the continuation (with its leading space),
// as hack/vendor-data.go picks the prompts.
func splitOpening(text string) (opening, cont string, ok bool) {
	f := strings.Fields(text)
	h := sha256.Sum256([]byte("opening\x00" + text))
	k := 2 + int(h[0])%3
	for k >= 2 && len(f)-k < 1 {
		k--
	}
	if k < 2 {
		return "", "", false
	}
	return strings.Join(f[:k], " "), " " + strings.Join(f[k:], " "), true
}

// guardDecidedRate is the fraction of the pairs (2i, 2i+1) of xs that the guards decided.
func guardDecidedRate(s *Guarded, xs []string) float64 {
	n, d := 0, 0
	for i := 0; i+1 < len(xs); i += 2 {
		n++
		if GuardDecided(s, xs[i], xs[i+1]) {
			d++
		}
	}
	return float64(d) / float64(n)
}

// maxGuardDecided is the most the guards may decide of pairs of fluent human text (the target of
// the issue that introduced GuardDecided). Measured: see data/README.md.
const maxGuardDecided = 0.20

// On fluent human text the guards must rarely decide a pair: the scorer's own polarity should.
func TestGuardRarelyDecidesOnHumanText(t *testing.T) {
	sets := humanPairs(t)
	for _, sc := range scorers() {
		for _, name := range []string{"continuations", "same-opening", "references", "brown"} {
			xs := sets[name]
			r := guardDecidedRate(sc, xs)
			t.Logf("%s: %s: guards decided %.3f of %d pairs", sc.Name(), name, r, len(xs)/2)
			if r > maxGuardDecided {
				t.Errorf("%s: %s: guards decided %.3f of %d pairs, want <= %.2f", sc.Name(), name, r, len(xs)/2, maxGuardDecided)
			}
		}
	}
}

func TestGuardDecided(t *testing.T) {
	fluent := "the food was good and the staff were friendly"
	for _, sc := range scorers() {
		for _, c := range []struct {
			a, b string
			want bool
			why  string
		}{
			{fluent, fluent, false, "identical texts tie both ways"},
			{fluent, "the service was slow and the soup was cold", false, "fluent texts: polarity decides"},
			{"great great great great great", "the package arrived on tuesday with the manual", true, "repetition: the guards decide"},
			{"good great nice excellent amazing", "the food was good", true, "word salad: the guards decide"},
			{"the food was great gr8 lol", "the food was great", true, "non-words: the guards break the tie"},
			{"", "xq zzkv blorp", true, "empty: -1 against the non-words' -0.5, where both have no polarity"},
		} {
			if got := GuardDecided(sc, c.a, c.b); got != c.want {
				a, b := sc.Breakdown(c.a), sc.Breakdown(c.b)
				t.Errorf("%s: %s: GuardDecided(%q, %q) = %v, want %v (scores %.3f, %.3f; unguarded %.3f, %.3f)",
					sc.Name(), c.why, c.a, c.b, got, c.want, a.Score, b.Score, a.Unguarded, b.Unguarded)
			}
			if GuardDecided(sc, c.a, c.b) != GuardDecided(sc, c.b, c.a) {
				t.Errorf("%s: GuardDecided(%q, %q) is not symmetric", sc.Name(), c.a, c.b)
			}
		}
	}
}
