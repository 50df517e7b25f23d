package pipeline

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/bpo-dev/bpo/api/v1alpha1"
)

// Fuzz targets for the files a stage reads that it did not necessarily write itself:
// the JSONL of samples and pairs (ReadJSONL) and the AlignmentRun manifest (DecodeRun,
// what `bpo run -f` and the stage commands read). hack/fuzz.sh runs them for a few
// seconds each.

// fzLines are the non-blank lines of b as bufio.ScanLines yields them, trimmed.
func fzLines(b []byte) [][]byte {
	var out [][]byte
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		if l := bytes.TrimSpace(sc.Bytes()); len(l) > 0 {
			out = append(out, append([]byte(nil), l...))
		}
	}
	return out
}

// fzCheckJSONL decodes data as JSONL of T and checks: an error names the input as
// file:line; otherwise every non-blank line is exactly one JSON object and gave one row,
// and the rows written back as WriteJSONL does decode to the same rows.
func fzCheckJSONL[T any](t *testing.T, data []byte) {
	rows, err := decodeJSONL[T](bytes.NewReader(data), "rows.jsonl")
	if err != nil {
		if rows != nil || !strings.HasPrefix(err.Error(), "rows.jsonl:") {
			t.Fatalf("%T: error without file:line or with rows: %v", rows, err)
		}
		return
	}
	lines := fzLines(data)
	if len(rows) != len(lines) {
		t.Fatalf("%T: %d rows from %d non-blank lines", rows, len(rows), len(lines))
	}
	for i, l := range lines {
		if !json.Valid(l) || l[0] != '{' {
			t.Fatalf("%T: line %d %q is not one JSON object, yet accepted as %+v", rows, i+1, l, rows[i])
		}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	for _, r := range rows {
		if err := enc.Encode(r); err != nil {
			t.Fatalf("%T: re-encoding %+v: %v", rows, r, err)
		}
	}
	back, err := decodeJSONL[T](&buf, "again.jsonl")
	if err != nil {
		t.Fatalf("%T: decoding the rows written back: %v", rows, err)
	}
	if !reflect.DeepEqual(back, rows) {
		t.Fatalf("%T: round trip:\n got %+v\nwant %+v", rows, back, rows)
	}
}

// FuzzReadJSONL: the samples and pairs readers (see fzCheckJSONL).
func FuzzReadJSONL(f *testing.F) {
	enc := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		return append(b, '\n')
	}
	f.Add(enc(SampleRow{Index: 3, Prompt: "I loved", PromptIDs: []int{73, 32}, Responses: []string{" it", " \xff"},
		ResponseIDs: [][]int{{105, 116}, {32, 255}}, BehaviorLogps: []float64{-1.5, -2e-3}, ReferenceLogps: []float64{-1, -3}, Identical: true}))
	f.Add(append(enc(Pair{Prompt: "p", Chosen: " a", Rejected: " b", ScoreChosen: 0.5, ScoreRejected: -0.25, Phase: 2, Index: 7,
		PromptIDs: []int{112}, ChosenIDs: []int{32, 97}, RejectedIDs: []int{32, 98}, BehaviorLogps: [2]float64{-1, -2}, ReferenceLogps: [2]float64{-1.1, -2.2}}),
		enc(Pair{Prompt: "q"})...))
	f.Add([]byte("\n  {\"index\": 1, \"PROMPT\": \"x\"}\r\n\n{\"index\": 2}"))
	f.Add([]byte(`{"index": 1, "typo": 2}`))
	f.Add([]byte(`{"index": 1e400}`))
	f.Add([]byte(`{"behavior_logps": [1, 2, 3]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		fzCheckJSONL[SampleRow](t, data)
		fzCheckJSONL[Pair](t, data)
	})
}

// FuzzDecodeRun: DecodeRun returns an error or a defaulted AlignmentRun that passes
// ValidateLocal, whose decimal fields NewRun parses, that defaulting again leaves
// unchanged, and that round-trips through YAML.
func FuzzDecodeRun(f *testing.F) {
	samples, err := filepath.Glob("../config/samples/*.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, p := range samples {
		if strings.HasSuffix(p, "kustomization.yaml") || strings.HasSuffix(p, "_pvc.yaml") {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{
		"kind: AlignmentRun\nmetadata: {name: x}\nspec:\n  model: {builtin: tiny-reviews}\n  data: {builtin: reviews}\n  budget: {pairs: 64}\n  workspace: {path: ws}\n",
		"kind: AlignmentRun\nmetadata: {name: x}\nspec:\n  model: {builtin: tiny-reviews}\n  data: {builtin: reviews}\n  loss: {beta: \"-1\"}\n  budget: {pairs: 64}\n  workspace: {path: ws}\n",
		"# comment\n---\nkind: Job\nmetadata: {name: x}\n---\n",
		"spec: [",
		"a: &a [x, x, x, x]\nb: &b [*a, *a, *a, *a]\nc: &c [*b, *b, *b, *b]\nd: [*c, *c, *c, *c]\n",
		`{"kind": "AlignmentRun", "metadata": {"name": "j"}, "spec": {"model": {"path": "/m"}, "data": {"path": "/d"}, "budget": {"pairs": 8}, "workspace": {"path": "w"}}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ar, err := DecodeRun(data)
		if err != nil {
			if ar != nil {
				t.Fatalf("error %v with a run", err)
			}
			return
		}
		if errs := ar.ValidateLocal(); len(errs) > 0 {
			t.Fatalf("accepted an invalid run: %v", errs.ToAggregate())
		}
		if _, err := NewRun(ar); err != nil {
			t.Fatalf("DecodeRun accepted a run NewRun rejects: %v", err)
		}
		again := ar.DeepCopy()
		again.SetDefaults()
		if !reflect.DeepEqual(again, ar) {
			t.Fatalf("defaults are not idempotent:\n%+v\n%+v", again.Spec, ar.Spec)
		}
		out, err := yaml.Marshal(ar)
		if err != nil {
			t.Fatalf("marshalling %+v: %v", ar, err)
		}
		back, err := DecodeRun(out)
		if err != nil {
			t.Fatalf("decoding the run written back: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(fzComparable(back), fzComparable(ar)) {
			t.Fatalf("round trip:\n%s\n got %+v\nwant %+v", out, back.Spec, ar.Spec)
		}
	})
}

// fzComparable is the run as JSON, so that equal values compare equal whatever their
// in-memory form (a nil and an empty map, a time's location).
func fzComparable(ar *v1alpha1.AlignmentRun) string {
	b, err := json.Marshal(ar)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// TestReadJSONLOneObjectPerLine is the regression test for FuzzReadJSONL's findings
// (seeds testdata/fuzz/FuzzReadJSONL/null-line and trailing-data): a "null" line used to
// decode to a zero row, and a second value on a line was dropped silently.
func TestReadJSONLOneObjectPerLine(t *testing.T) {
	for in, want := range map[string]string{
		"{\"index\": 1}\nnull\n":            "x.jsonl:2: not a JSON object",
		"{\"index\": 1} {\"index\": 2}\n":   "x.jsonl:1: trailing data after the JSON object",
		"\n{\"index\": 1}]\n":               "x.jsonl:2: trailing data after the JSON object",
		"[{\"index\": 1}]\n":                "x.jsonl:1: not a JSON object",
		"{\"index\": 1, \"indx\": 2}\n":     `x.jsonl:1: json: unknown field "indx"`,
		"\n {\"index\": 1} \r\n\n{}\n\n\n ": "",
	} {
		rows, err := decodeJSONL[SampleRow](strings.NewReader(in), "x.jsonl")
		if want == "" {
			if err != nil || len(rows) != 2 || rows[0].Index != 1 {
				t.Errorf("%q: %v, %v", in, rows, err)
			}
			continue
		}
		if err == nil || err.Error() != want {
			t.Errorf("%q: got %v, want %s", in, err, want)
		}
	}
}
