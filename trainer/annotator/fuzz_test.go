package annotator

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"testing"
)

// fzItems turns fuzz bytes into a request: one item per byte (at most 16), with
// byte%5 responses.
func fzItems(shape []byte) []Item {
	items := make([]Item, 0, min(len(shape), 16))
	for i, b := range shape[:min(len(shape), 16)] {
		it := Item{Prompt: "p" + strconv.Itoa(i)}
		for j := 0; j < int(b%5); j++ {
			it.Responses = append(it.Responses, "r")
		}
		items = append(items, it)
	}
	return items
}

// FuzzDecodeAnswer: an HTTP annotator's answer (a service the trainer does not control)
// is either rejected with an error, or gives exactly one score per response of every
// item, each a finite number that the answer actually holds at that place (nothing
// defaulted: a null or a missing entry is not a score of 0).
func FuzzDecodeAnswer(f *testing.F) {
	f.Add([]byte(`{"scores": [[0.7, -0.2], [1e-3]]}`), []byte{2, 1})
	f.Add([]byte(`{"scores": [[1, 3], [2], [0, 4], [1, 2], [5]]}`), []byte{2, 1, 2, 2, 1})
	f.Add([]byte(`{"scores": []}`), []byte{})
	f.Add([]byte(`{"scores": [[]], "model": "judge-v2", "latency_ms": 12}`), []byte{0})
	f.Add([]byte(`{"scores": [[1]]}`), []byte{2})
	f.Add([]byte(`{"scores": [[1e400]]}`), []byte{1})
	f.Add([]byte(`{"scores": [[null, 2]]}`), []byte{2})
	f.Add([]byte(`{"Scores": [[1]], "scores": [[2]]}`), []byte{1})
	f.Add([]byte("<html>oops</html>"), []byte{1})
	f.Add([]byte(`{"scores": null}`), []byte{})
	f.Fuzz(func(t *testing.T, data, shape []byte) {
		items := fzItems(shape)
		scores, err := decodeAnswer(data, items)
		if err != nil {
			if scores != nil || err.Error() == "" {
				t.Fatalf("error %q with scores %v", err, scores)
			}
			return
		}
		if len(scores) != len(items) {
			t.Fatalf("%d score lists for %d items", len(scores), len(items))
		}
		// What the answer holds, read independently (numbers kept as written).
		var raw struct {
			Scores []json.RawMessage `json:"scores"`
		}
		if err := json.Unmarshal(data, &raw); err != nil {
			t.Fatalf("accepted an answer that is not a JSON object with scores: %v", err)
		}
		for i, s := range scores {
			if len(s) != len(items[i].Responses) {
				t.Fatalf("item %d: %d scores for %d responses", i, len(s), len(items[i].Responses))
			}
			var held []any
			dec := json.NewDecoder(bytes.NewReader(raw.Scores[i]))
			dec.UseNumber()
			if err := dec.Decode(&held); err != nil || len(held) != len(s) {
				t.Fatalf("item %d: accepted %s as %v (%v)", i, raw.Scores[i], s, err)
			}
			for j, v := range s {
				if math.IsNaN(v) || math.IsInf(v, 0) {
					t.Fatalf("item %d response %d: accepted score %v", i, j, v)
				}
				n, ok := held[j].(json.Number)
				if !ok {
					t.Fatalf("item %d response %d: the answer holds %v, accepted as the score %v", i, j, held[j], v)
				}
				if f, err := strconv.ParseFloat(string(n), 64); err != nil || f != v {
					t.Fatalf("item %d response %d: the answer holds %s, accepted as %v", i, j, n, v)
				}
			}
		}
	})
}

// TestDecodeAnswerMessages keeps the errors ScoreBatch reports (through decodeAnswer),
// and pins FuzzDecodeAnswer's finding.
func TestDecodeAnswerMessages(t *testing.T) {
	items := []Item{{"p", []string{"a", "b"}}}
	for body, want := range map[string]string{
		"<html>oops</html>": `answer is not {"scores": [[...], ...]}: invalid character '<'`,
		`{"scores": []}`:    "answer has 0 score lists for 1 items",
		`{"scores": [[1]]}`: "item 0: 1 scores for 2 responses",
		// FuzzDecodeAnswer's finding: a null score used to be accepted as 0.
		`{"scores": [[null, 2]]}`: "item 0 response 0: score null is not a finite number",
		`{"scores": [[1, 2]]} `:   "",
	} {
		scores, err := decodeAnswer([]byte(body), items)
		if want == "" {
			if err != nil || len(scores) != 1 || scores[0][1] != 2 {
				t.Errorf("%s: %v, %v", body, scores, err)
			}
			continue
		}
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%s: got %v, want %s", body, err, want)
		}
	}
}
