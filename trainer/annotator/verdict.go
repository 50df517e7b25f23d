package annotator

import (
	"encoding/json"
	"strings"
)

// verdict is a judge's answer about one order of a pair: the first shown (A), the second (B),
// tie, or an answer that could not be read.
type verdict uint8

const (
	verdictInvalid verdict = iota
	verdictA
	verdictB
	verdictTie
)

func (v verdict) String() string {
	return [...]string{"invalid", "A", "B", "tie"}[v]
}

// verdictSchema is the response_format sent in structured mode: {"verdict": "A"|"B"|"tie"}.
var verdictSchema = map[string]any{
	"type": "json_schema",
	"json_schema": map[string]any{
		"name":   "verdict",
		"strict": true,
		"schema": map[string]any{
			"type":                 "object",
			"properties":           map[string]any{"verdict": map[string]any{"type": "string", "enum": []string{"A", "B", "tie"}}},
			"required":             []string{"verdict"},
			"additionalProperties": false,
		},
	},
}

// parseVerdict reads a judge's answer, strictly: after an optional reasoning block
// (<think>...</think>), the answer is a JSON object {"verdict": ...} (possibly in a ```json
// fence), or a bare "A", "B" or "tie", possibly labelled ("Answer: A", "Verdict: tie",
// "Response B") and wrapped in quotes, brackets, bold or a final period. Case does not matter.
// Anything else, such as "A is better" or "A or B", is invalid: the caller retries, then counts
// a tie; it never guesses.
func parseVerdict(answer string) verdict {
	s := strings.ToLower(answer)
	if i := strings.LastIndex(s, "</think>"); i >= 0 {
		s = s[i+len("</think>"):]
	}
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "```") {
		s = strings.TrimPrefix(strings.TrimPrefix(s, "```"), "json")
		s = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(s), "```"))
	}
	if strings.HasPrefix(s, "{") {
		var obj map[string]json.RawMessage
		if json.Unmarshal([]byte(s), &obj) != nil {
			return verdictInvalid
		}
		var v string
		if json.Unmarshal(obj["verdict"], &v) != nil {
			return verdictInvalid
		}
		return bareVerdict(v)
	}
	return bareVerdict(s)
}

// bareVerdict reads a lower-case "a", "b" or "tie" with the decorations parseVerdict allows.
func bareVerdict(s string) verdict {
	const wrap = " \t\r\n*_\"'`.!()[]<>"
	s = strings.Trim(s, wrap)
	for _, label := range []string{"final answer", "answer", "verdict"} {
		if rest, ok := strings.CutPrefix(s, label); ok {
			s = strings.Trim(strings.TrimLeft(rest, " \t:-*"), wrap)
			break
		}
	}
	for _, noun := range []string{"response ", "continuation ", "option "} {
		if rest, ok := strings.CutPrefix(s, noun); ok {
			s = strings.Trim(rest, wrap)
			break
		}
	}
	switch s {
	case "a":
		return verdictA
	case "b":
		return verdictB
	case "tie":
		return verdictTie
	}
	return verdictInvalid
}

// outcome of a pair (x, y): +1 x is better, -1 y is better, 0 tie.
type outcome int8

// combine decides a pair (x, y) from its two orders: first the judge saw x as A and y as B,
// then y as A and x as B. The verdict stands only if both orders agree; otherwise it is a tie
// and a position flip (the judge followed the position, not the text). An invalid answer in
// either order makes a tie too (counted invalid, not a flip).
func combine(first, second verdict) (o outcome, flip, invalid bool) {
	if first == verdictInvalid || second == verdictInvalid {
		return 0, false, true
	}
	// What each order says about x.
	x1 := map[verdict]outcome{verdictA: 1, verdictB: -1, verdictTie: 0}[first]
	x2 := map[verdict]outcome{verdictA: -1, verdictB: 1, verdictTie: 0}[second]
	if x1 != x2 {
		return 0, true, false
	}
	return x1, false, false
}
