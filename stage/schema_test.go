package stage

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/pipeline"
)

// TestSchemasMatchOurStages runs our own stages on the tiny run and validates every file they
// write against the schemas, so that the schemas and the code cannot drift apart.
func TestSchemasMatchOurStages(t *testing.T) {
	f, err := Prepare(t.TempDir(), v1alpha1.StageEval, 1, FixtureRun(2))
	if err != nil {
		t.Fatal(err)
	}
	env := openFixtureEnv(t, f.Config, f.Volume)
	res, err := env.Eval(1)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := pipeline.EncodeResult(res)
	if err != nil {
		t.Fatal(err)
	}
	if err := Validate(SchemaStageResult, msg); err != nil {
		t.Errorf("eval termination message: %v", err)
	}
	ws := env.WS
	counts := map[string]int{}
	for j := range 2 {
		for name, path := range map[string]string{SchemaSamplesRow: ws.SamplesPath(1, j), SchemaPairsRow: ws.PairsPath(1, j)} {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			n, err := ValidateJSONL(name, path, data)
			if err != nil {
				t.Error(err)
			}
			counts[name] += n
		}
	}
	if counts[SchemaSamplesRow] != 4 || counts[SchemaPairsRow] == 0 {
		t.Errorf("want 4 sample rows and some pairs, got %v", counts)
	}
	markers, _ := filepath.Glob(filepath.Join(ws.PhaseDir(1), "*.done.json"))
	if len(markers) != 2+2+2+1 {
		t.Errorf("want 7 done markers (2 sample, 2 label, 2 train, 1 eval), got %v", markers)
	}
	for _, m := range markers {
		validateFile(t, SchemaStageResult, m)
	}
	validateFile(t, SchemaEvalResult, filepath.Join(ws.EvalDir(1), "result.json"))

	// A failed stage's message (what cmd/bpo writes on error) is a stage result too.
	fail, err := pipeline.EncodeResult(v1alpha1.StageResult{Stage: "label", Phase: 1, Message: strings.Repeat("x", 9000)})
	if err != nil || len(fail) > v1alpha1.MaxStageResultBytes {
		t.Fatalf("long failure message: %d bytes, %v", len(fail), err)
	}
	if err := Validate(SchemaStageResult, fail); err != nil {
		t.Error(err)
	}
}

func validateFile(t *testing.T, name, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := Validate(name, data); err != nil {
		t.Errorf("%s: %v", path, err)
	}
}

func openFixtureEnv(t *testing.T, config, volume string) *pipeline.Env {
	t.Helper()
	ar, err := pipeline.LoadRunFile(config)
	if err != nil {
		t.Fatal(err)
	}
	run, err := pipeline.NewRun(ar)
	if err != nil {
		t.Fatal(err)
	}
	env, err := pipeline.NewEnv(run, volume)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// TestSchemasRejectBrokenRows: a missing field or a wrong type fails with the field's name.
func TestSchemasRejectBrokenRows(t *testing.T) {
	sample := `{"index":0,"prompt":"The food","prompt_ids":[1,2],"responses":["a","b"],"response_ids":[[3],[4]],"behavior_logps":[-1,-2],"reference_logps":[-1,-2]}`
	pair := `{"prompt":"p","chosen":"a","rejected":"b","score_chosen":1,"score_rejected":0,"phase":1,"index":0,"prompt_ids":[1],"chosen_ids":[3],"rejected_ids":[4],"behavior_logps":[-1,-2],"reference_logps":[-1,-2]}`
	result := `{"stage":"sample","phase":1,"index":0,"samples":4}`
	for _, c := range []struct {
		name, schema, doc string
		wantErr           string // "" = valid
	}{
		{"sample ok", SchemaSamplesRow, sample, ""},
		{"pair ok", SchemaPairsRow, pair, ""},
		{"result ok", SchemaStageResult, result, ""},
		{"sample without prompt", SchemaSamplesRow, drop(t, sample, "prompt"), "'prompt'"},
		{"sample index a string", SchemaSamplesRow, set(t, sample, "index", "0"), "/index"},
		{"sample token id a string", SchemaSamplesRow, set(t, sample, "prompt_ids", []any{"1"}), "/prompt_ids/0"},
		{"sample one response", SchemaSamplesRow, set(t, sample, "responses", []string{"a"}), "/responses"},
		{"sample unknown field", SchemaSamplesRow, set(t, sample, "logps", 1), "'logps'"},
		{"pair without chosen_ids", SchemaPairsRow, drop(t, pair, "chosen_ids"), "'chosen_ids'"},
		{"pair three logps", SchemaPairsRow, set(t, pair, "behavior_logps", []float64{-1, -2, -3}), "/behavior_logps"},
		{"result unknown stage", SchemaStageResult, set(t, result, "stage", "sampel"), "/stage"},
		{"result without phase", SchemaStageResult, drop(t, result, "phase"), "'phase'"},
		{"result negative count", SchemaStageResult, set(t, result, "samples", -1), "/samples"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := Validate(c.schema, []byte(c.doc))
			switch {
			case c.wantErr == "" && err != nil:
				t.Fatalf("want valid, got %v", err)
			case c.wantErr != "" && err == nil:
				t.Fatalf("want an error naming %s, got none", c.wantErr)
			case c.wantErr != "" && !strings.Contains(err.Error(), c.wantErr):
				t.Fatalf("error does not name %s: %v", c.wantErr, err)
			}
		})
	}
	if err := Validate("nope", []byte(`{}`)); err == nil || !strings.Contains(err.Error(), "samples-row") {
		t.Errorf("unknown schema: want an error listing the schemas, got %v", err)
	}
}

func TestSchemaNames(t *testing.T) {
	for _, n := range []string{SchemaSamplesRow, SchemaPairsRow, SchemaEvalResult, SchemaStageResult} {
		data, err := Schema(n)
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := json.Unmarshal(data, &doc); err != nil || doc["$schema"] != "https://json-schema.org/draft/2020-12/schema" {
			t.Errorf("%s: not a draft 2020-12 schema (%v)", n, err)
		}
	}
}

func drop(t *testing.T, doc, field string) string {
	var m map[string]any
	if err := json.Unmarshal([]byte(doc), &m); err != nil {
		t.Fatal(err)
	}
	delete(m, field)
	out, _ := json.Marshal(m)
	return string(out)
}

func set(t *testing.T, doc, field string, v any) string {
	var m map[string]any
	if err := json.Unmarshal([]byte(doc), &m); err != nil {
		t.Fatal(err)
	}
	m[field] = v
	out, _ := json.Marshal(m)
	return string(out)
}
