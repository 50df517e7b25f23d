// Package stage is the versioned contract between the operator and the stage pods (the
// `bpo sample|label|train|eval` commands, or any program that replaces them): the JSON
// Schemas of the files a stage reads and writes, and a conformance check that runs a stage
// against a fixture workspace (docs/stage-contract.md). The contract's code that both sides
// import (completions, invocation, termination message, result folding) is the leaf package
// stage/contract: this package runs our own pipeline and so is no leaf.
package stage

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/bpo-dev/bpo/stage/contract"
)

// ContractVersion is the version of the stage contract this package describes.
const ContractVersion = contract.Version

// Schema names: one per document kind of the contract.
const (
	SchemaSamplesRow  = "samples-row"  // a line of phase-<k>/samples/shard-<j>.jsonl (pipeline.SampleRow)
	SchemaPairsRow    = "pairs-row"    // a line of phase-<k>/pairs/shard-<j>.jsonl (pipeline.Pair)
	SchemaEvalResult  = "eval-result"  // phase-<k>/eval/result.json (pipeline.EvalResult)
	SchemaStageResult = "stage-result" // the termination message and done markers (v1alpha1.StageResult)
)

//go:embed schemas/*.schema.json
var schemaFS embed.FS

// schemaBase is the $id prefix of every schema file.
const schemaBase = "https://bpo.dev/schemas/" + ContractVersion + "/"

// Names lists the schemas of the contract (shared fragments such as annotation-accounting included).
func Names() []string {
	entries, _ := schemaFS.ReadDir("schemas")
	var out []string
	for _, e := range entries {
		out = append(out, strings.TrimSuffix(e.Name(), ".schema.json"))
	}
	slices.Sort(out)
	return out
}

// Schema returns the JSON Schema (draft 2020-12) document called name.
func Schema(name string) ([]byte, error) {
	data, err := schemaFS.ReadFile(path.Join("schemas", name+".schema.json"))
	if err != nil {
		return nil, fmt.Errorf("stage contract %s has no schema %q (have %s)", ContractVersion, name, strings.Join(Names(), ", "))
	}
	return data, nil
}

var compiled = sync.OnceValues(compileAll)

// compileAll compiles every embedded schema once; they reference each other by relative $ref.
func compileAll() (map[string]*jsonschema.Schema, error) {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	for _, name := range Names() {
		data, _ := Schema(name)
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("schema %s: %w", name, err)
		}
		if err := c.AddResource(schemaBase+name+".schema.json", doc); err != nil {
			return nil, fmt.Errorf("schema %s: %w", name, err)
		}
	}
	out := map[string]*jsonschema.Schema{}
	for _, name := range Names() {
		s, err := c.Compile(schemaBase + name + ".schema.json")
		if err != nil {
			return nil, fmt.Errorf("schema %s: %w", name, err)
		}
		out[name] = s
	}
	return out, nil
}

// Validate checks one JSON document against the schema called name. The error names the
// offending field by its JSON pointer (for example "at '/prompt_ids/0': got string, want integer").
func Validate(name string, doc []byte) error {
	all, err := compiled()
	if err != nil {
		return err
	}
	s, ok := all[name]
	if !ok {
		return fmt.Errorf("stage contract %s has no schema %q (have %s)", ContractVersion, name, strings.Join(Names(), ", "))
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return fmt.Errorf("not valid JSON: %w", err)
	}
	if err := s.Validate(v); err != nil {
		return fmt.Errorf("%s: %s", name, oneLine(err))
	}
	return nil
}

// ValidateJSONL checks every non-blank line of a JSONL file against the schema called name and
// returns the number of rows; an error is reported as file:line.
func ValidateJSONL(name, file string, data []byte) (int, error) {
	rows := 0
	for i, line := range bytes.Split(data, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		if err := Validate(name, line); err != nil {
			return rows, fmt.Errorf("%s:%d: %w", file, i+1, err)
		}
		rows++
	}
	return rows, nil
}

// oneLine flattens the library's multi-line error into "at '<pointer>': <what>; ...", dropping
// the header line that names the schema URL.
func oneLine(err error) string {
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return err.Error()
	}
	var parts []string
	for _, l := range strings.Split(ve.Error(), "\n") {
		l = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "- "))
		if l == "" || strings.HasPrefix(l, "jsonschema validation failed") {
			continue
		}
		parts = append(parts, l)
	}
	return strings.Join(parts, "; ")
}
