// Package task provides alignment tasks: text to pretrain and fine-tune a base model on, prompts to
// align on, and held-out prompts with human reference continuations to evaluate against.
//
// A task is a folder of files (all optional except prompts.jsonl and eval.jsonl):
//
//	pretrain.txt      one pretraining document per line (or pretrain.jsonl: {"text": ...} per line)
//	sft.jsonl         {"text": ..., "group": ...}  supervised fine-tuning texts; the optional group
//	                  (e.g. source and label) says which texts one SFT example may join
//	                  (bpo sft --join); other fields are ignored
//	prompts.jsonl     {"prompt": ...}    training prompts
//	validation.jsonl  {"prompt": ..., "reference": ...}  for choosing hyperparameters
//	eval.jsonl        {"prompt": ..., "reference": ...}  for the final report only
//
// The reference is the human continuation of the prompt: prompt+reference is the original text.
// Blank lines are skipped; any other line must be a JSON object with a non-empty string in the
// required field, and an error names the file and line. Builtin tasks are the same files embedded
// in the binary; Load reads a folder (spec data.path).
//
// The one built-in task, "reviews", is built by hack/vendor-data.sh from the UCI Sentiment
// Labelled Sentences and a Brown corpus subset; docs/data.md describes its sources, licences and
// splits.
package task

import (
	"bufio"
	"bytes"
	"cmp"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Example is a held-out prompt with the human reference continuation.
type Example struct {
	Prompt    string `json:"prompt"`
	Reference string `json:"reference"`
}

// Task is the data of one alignment task.
type Task struct {
	Name     string
	Pretrain []string
	SFT      []string
	// SFTGroups[i] is the "group" of SFT[i] ("" where a line has none); nil when no line has one.
	SFTGroups  []string
	Prompts    []string
	Validation []Example
	Eval       []Example
}

//go:embed reviews/data/pretrain.txt reviews/data/sft.jsonl reviews/data/prompts.jsonl
//go:embed reviews/data/validation.jsonl reviews/data/eval.jsonl
var builtinFS embed.FS

var builtins = map[string]string{"reviews": "reviews/data"}

// Names lists the built-in tasks, sorted.
func Names() []string {
	names := make([]string, 0, len(builtins))
	for n := range builtins {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Builtin returns a fresh copy of the named built-in task.
func Builtin(name string) (*Task, error) {
	dir, ok := builtins[name]
	if !ok {
		return nil, fmt.Errorf("unknown task %q (available: %s)", name, strings.Join(Names(), ", "))
	}
	sub, err := fs.Sub(builtinFS, dir)
	if err != nil {
		return nil, err
	}
	return load(sub, name, "task "+name, Files{})
}

// Load reads a task from a folder laid out as described in the package doc. The task's name is
// the folder's base name.
func Load(dir string) (*Task, error) { return LoadWith(dir, Files{}) }

// Files names the task files that a caller may rename (a ConfigMap's keys, for example);
// empty means the standard name.
type Files struct {
	Prompts string // default prompts.jsonl
	Eval    string // default eval.jsonl
}

func (f Files) prompts() string { return cmp.Or(f.Prompts, "prompts.jsonl") }
func (f Files) eval() string    { return cmp.Or(f.Eval, "eval.jsonl") }

// LoadWith is Load with the prompts and eval files under other names.
func LoadWith(dir string, files Files) (*Task, error) {
	info, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("task folder: %w", err)
	}
	if !info.IsDir() {
		return nil, fmt.Errorf("task folder %s: not a directory", dir)
	}
	return load(os.DirFS(dir), filepath.Base(filepath.Clean(dir)), dir, files)
}

func load(fsys fs.FS, name, where string, files Files) (*Task, error) {
	t := &Task{Name: name}
	var err error
	label := func(file string) string {
		if strings.HasPrefix(where, "task ") {
			return where + ": " + file
		}
		return filepath.Join(where, file)
	}

	hasTxt, hasJSONL := exists(fsys, "pretrain.txt"), exists(fsys, "pretrain.jsonl")
	switch {
	case hasTxt && hasJSONL:
		return nil, fmt.Errorf("%s: both pretrain.txt and pretrain.jsonl; keep one", where)
	case hasTxt:
		raw, err := fs.ReadFile(fsys, "pretrain.txt")
		if err != nil {
			return nil, err
		}
		t.Pretrain = Documents(raw)
	case hasJSONL:
		if t.Pretrain, err = readField(fsys, "pretrain.jsonl", label("pretrain.jsonl"), "text"); err != nil {
			return nil, err
		}
	}
	if exists(fsys, "sft.jsonl") {
		if t.SFT, t.SFTGroups, err = readSFT(fsys, "sft.jsonl", label("sft.jsonl")); err != nil {
			return nil, err
		}
	}
	pf, ef := files.prompts(), files.eval()
	if t.Prompts, err = readField(fsys, pf, label(pf), "prompt"); err != nil {
		return nil, err
	}
	if exists(fsys, "validation.jsonl") {
		if t.Validation, err = readExamples(fsys, "validation.jsonl", label("validation.jsonl")); err != nil {
			return nil, err
		}
	}
	if t.Eval, err = readExamples(fsys, ef, label(ef)); err != nil {
		return nil, err
	}
	if len(t.Prompts) == 0 {
		return nil, fmt.Errorf("%s: no prompts", label(pf))
	}
	if len(t.Eval) == 0 {
		return nil, fmt.Errorf("%s: no examples", label(ef))
	}
	return t, nil
}

// Documents splits a one-document-per-line text (pretrain.txt, a pretraining corpus) into its
// documents: lines without their "\r", blank ones skipped.
func Documents(raw []byte) []string {
	var docs []string
	for _, l := range strings.Split(string(raw), "\n") {
		if l = strings.TrimRight(l, "\r"); strings.TrimSpace(l) != "" {
			docs = append(docs, l)
		}
	}
	return docs
}

func exists(fsys fs.FS, file string) bool {
	_, err := fs.Stat(fsys, file)
	return err == nil
}

// readSFT reads the texts of sft.jsonl and their groups (nil when no line has a "group").
func readSFT(fsys fs.FS, file, label string) (texts, groups []string, err error) {
	grouped := false
	err = eachLine(fsys, file, label, func(obj map[string]json.RawMessage) error {
		s, err := stringField(obj, "text")
		if err != nil {
			return err
		}
		g := ""
		if _, ok := obj["group"]; ok {
			if g, err = stringField(obj, "group"); err != nil {
				return err
			}
			grouped = true
		}
		texts, groups = append(texts, s), append(groups, g)
		return nil
	})
	if !grouped {
		groups = nil
	}
	return texts, groups, err
}

// readField reads the non-empty string field of every JSON object line.
func readField(fsys fs.FS, file, label, field string) ([]string, error) {
	var out []string
	err := eachLine(fsys, file, label, func(obj map[string]json.RawMessage) error {
		s, err := stringField(obj, field)
		if err != nil {
			return err
		}
		out = append(out, s)
		return nil
	})
	return out, err
}

func readExamples(fsys fs.FS, file, label string) ([]Example, error) {
	var out []Example
	err := eachLine(fsys, file, label, func(obj map[string]json.RawMessage) error {
		p, err := stringField(obj, "prompt")
		if err != nil {
			return err
		}
		r, err := stringField(obj, "reference")
		if err != nil {
			return err
		}
		out = append(out, Example{Prompt: p, Reference: r})
		return nil
	})
	return out, err
}

func stringField(obj map[string]json.RawMessage, field string) (string, error) {
	raw, ok := obj[field]
	if !ok {
		return "", fmt.Errorf("missing field %q", field)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("field %q is not a string", field)
	}
	if strings.TrimSpace(s) == "" {
		return "", fmt.Errorf("field %q is empty", field)
	}
	return s, nil
}

// eachLine calls f with every non-blank line parsed as a JSON object; errors carry label:line.
func eachLine(fsys fs.FS, file, label string, f func(map[string]json.RawMessage) error) error {
	raw, err := fs.ReadFile(fsys, file)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s: missing", label)
		}
		return err
	}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 0, 64*1024), 16<<20)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(line, &obj); err != nil {
			return fmt.Errorf("%s:%d: %v", label, n, err)
		}
		if obj == nil {
			return fmt.Errorf("%s:%d: not a JSON object", label, n)
		}
		if err := f(obj); err != nil {
			return fmt.Errorf("%s:%d: %v", label, n, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %v", label, err)
	}
	return nil
}
