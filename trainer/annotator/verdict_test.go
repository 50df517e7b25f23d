package annotator

import (
	"strings"
	"testing"
	"unicode"
)

func TestParseVerdict(t *testing.T) {
	for answer, want := range map[string]verdict{
		"A": verdictA, "b": verdictB, "tie": verdictTie, "TIE": verdictTie, " B\n": verdictB,
		"A.": verdictA, `"B"`: verdictB, "**A**": verdictA, "(b)": verdictB, "[tie]": verdictTie,
		"Answer: A": verdictA, "Final answer: B": verdictB, "Verdict - tie": verdictTie, "answer:**B**": verdictB,
		"Response A": verdictA, "continuation b.": verdictB, "Option A": verdictA,
		`{"verdict": "A"}`: verdictA, `{"verdict":"tie"}`: verdictTie, `{"Verdict": "b", "why": "x"}`: verdictB,
		"```json\n{\"verdict\": \"B\"}\n```":           verdictB,
		"<think>A looks better, or maybe B</think>\nA": verdictA,
		"<think>hmm</think> {\"verdict\": \"tie\"}":    verdictTie,
		// Invalid: never a guess.
		"": verdictInvalid, "A is better": verdictInvalid, "A or B": verdictInvalid, "AB": verdictInvalid,
		"C": verdictInvalid, "both": verdictInvalid, "I cannot decide.": verdictInvalid, "tied": verdictInvalid,
		`{"verdict": "C"}`: verdictInvalid, `{"verdict": 1}`: verdictInvalid, `{"winner": "A"}`: verdictInvalid,
		`{"verdict": "A"`: verdictInvalid, "<think>A</think>": verdictInvalid, "Response": verdictInvalid,
		"answer": verdictInvalid, "A\nB": verdictInvalid,
	} {
		if got := parseVerdict(answer); got != want {
			t.Errorf("parseVerdict(%q) = %v, want %v", answer, got, want)
		}
	}
}

func TestCombine(t *testing.T) {
	A, B, tie, bad := verdictA, verdictB, verdictTie, verdictInvalid
	for _, c := range []struct {
		first, second verdict
		o             outcome
		flip, invalid bool
	}{
		{A, B, 1, false, false},  // x first, then x second: x both times
		{B, A, -1, false, false}, // y both times
		{tie, tie, 0, false, false},
		{A, A, 0, true, false},   // always the first shown: position, not text
		{B, B, 0, true, false},   // always the second shown
		{A, tie, 0, true, false}, // disagree
		{tie, A, 0, true, false},
		{bad, A, 0, false, true},
		{B, bad, 0, false, true},
		{bad, bad, 0, false, true},
	} {
		o, flip, invalid := combine(c.first, c.second)
		if o != c.o || flip != c.flip || invalid != c.invalid {
			t.Errorf("combine(%v, %v) = %v %v %v, want %v %v %v", c.first, c.second, o, flip, invalid, c.o, c.flip, c.invalid)
		}
	}
}

// FuzzParseVerdict: parsing never panics; it ignores ASCII case and surrounding white space;
// and it only reads a verdict the answer spells out (A needs an "a", B a "b", tie a "tie").
func FuzzParseVerdict(f *testing.F) {
	for _, s := range []string{"A", "b", "tie", "Answer: A", `{"verdict": "B"}`, "```json\n{\"verdict\": \"tie\"}\n```",
		"<think>x</think>A", "A is better", "", "{", "<think>", "Response B.", `{"verdict": null}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v := parseVerdict(s)
		if v > verdictTie {
			t.Fatalf("parseVerdict(%q) = %d", s, v)
		}
		swapped := strings.Map(func(r rune) rune {
			if r < unicode.MaxASCII && unicode.IsLower(r) {
				return unicode.ToUpper(r)
			}
			if r < unicode.MaxASCII {
				return unicode.ToLower(r)
			}
			return r
		}, s)
		if w := parseVerdict(swapped); w != v {
			t.Fatalf("parseVerdict(%q) = %v but parseVerdict(%q) = %v", s, v, swapped, w)
		}
		if w := parseVerdict(" \n\t" + s + "\n "); w != v {
			t.Fatalf("parseVerdict(%q) = %v, with white space around it %v", s, v, w)
		}
		l := strings.ToLower(s)
		if (v == verdictA && !strings.Contains(l, "a")) || (v == verdictB && !strings.Contains(l, "b")) || (v == verdictTie && !strings.Contains(l, "tie")) {
			t.Fatalf("parseVerdict(%q) = %v, which the answer does not say", s, v)
		}
	})
}
