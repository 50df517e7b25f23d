package task

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// Split sizes of the vendored reviews task (docs/data.md); a rerun of hack/vendor-data.sh that
// changes them must update the docs too.
const (
	wantPretrain   = 6998
	wantSFT        = 2424
	wantPrompts    = 1732
	wantValidation = 169
	wantEval       = 360
)

func TestNames(t *testing.T) {
	if got := Names(); !reflect.DeepEqual(got, []string{"reviews"}) {
		t.Errorf("Names() = %v", got)
	}
	_, err := Builtin("tldr")
	if err == nil || !strings.Contains(err.Error(), `"tldr"`) || !strings.Contains(err.Error(), "available: reviews") {
		t.Errorf("Builtin(unknown) error = %v, want the name and the list of available tasks", err)
	}
}

func TestReviewsSizes(t *testing.T) {
	r, err := Builtin("reviews")
	if err != nil {
		t.Fatal(err)
	}
	if r.Name != "reviews" {
		t.Errorf("Name = %q", r.Name)
	}
	for _, c := range []struct {
		name      string
		got, want int
	}{
		{"pretrain", len(r.Pretrain), wantPretrain},
		{"sft", len(r.SFT), wantSFT},
		{"prompts", len(r.Prompts), wantPrompts},
		{"validation", len(r.Validation), wantValidation},
		{"eval", len(r.Eval), wantEval},
	} {
		if c.got != c.want {
			t.Errorf("%s: %d rows, want %d", c.name, c.got, c.want)
		}
	}
	if len(r.Eval) < 300 {
		t.Errorf("eval has %d prompts, want >= 300", len(r.Eval))
	}
	total := int64(0)
	err = fs.WalkDir(builtinFS, ".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			info, _ := d.Info()
			total += info.Size()
		}
		return err
	})
	if err != nil || total > 1_000_000 {
		t.Errorf("embedded task data is %d bytes (err %v); keep it under 1 MB", total, err)
	}
}

func sentence(e Example) string { return strings.ToLower(e.Prompt + e.Reference) }

// The held-out splits share no sentence with each other or with anything trained on.
func TestReviewsSplitsAreDisjoint(t *testing.T) {
	r, err := Builtin("reviews")
	if err != nil {
		t.Fatal(err)
	}
	trained := map[string]bool{}
	for _, s := range r.SFT {
		k := strings.ToLower(s)
		if trained[k] {
			t.Errorf("duplicate SFT sentence %q", s)
		}
		trained[k] = true
	}
	for _, s := range r.Pretrain {
		trained[strings.ToLower(s)] = true
	}
	for _, s := range r.SFT {
		if !containsFold(r.Pretrain, s) {
			t.Errorf("SFT sentence %q is not in the pretraining text", s)
			break
		}
	}
	lowerPretrain := make([]string, len(r.Pretrain))
	for i, s := range r.Pretrain {
		lowerPretrain[i] = strings.ToLower(s)
	}
	seen := map[string]string{}
	for split, exs := range map[string][]Example{"eval": r.Eval, "validation": r.Validation} {
		for _, e := range exs {
			k := sentence(e)
			if trained[k] {
				t.Errorf("%s sentence %q is in the training data", split, k)
			}
			if other, ok := seen[k]; ok {
				t.Errorf("%s sentence %q also in %s", split, k, other)
			}
			seen[k] = split
			ref := strings.TrimSpace(strings.ToLower(e.Reference))
			for _, s := range lowerPretrain {
				if len(ref) > 30 && strings.Contains(s, ref) {
					t.Errorf("%s reference %q occurs inside pretraining line %q", split, e.Reference, s)
				}
			}
		}
	}
}

// No prompt is shared between the splits: a training prompt that is also a held-out prompt would
// let the policy be trained on exactly what it is evaluated on.
func TestReviewsPromptsAreDisjoint(t *testing.T) {
	r, err := Builtin("reviews")
	if err != nil {
		t.Fatal(err)
	}
	split := map[string]string{}
	for _, p := range r.Prompts {
		split[p] = "train"
	}
	for _, c := range []struct {
		name string
		exs  []Example
	}{{"eval", r.Eval}, {"validation", r.Validation}} {
		mine := map[string]bool{}
		for _, e := range c.exs {
			mine[e.Prompt] = true
		}
		for p := range mine {
			if other, ok := split[p]; ok {
				t.Errorf("%s prompt %q is also a %s prompt", c.name, p, other)
			}
		}
		for p := range mine {
			split[p] = c.name
		}
	}
}

func containsFold(xs []string, s string) bool {
	for _, x := range xs {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

var negations = map[string]bool{"not": true, "no": true, "never": true, "nothing": true, "none": true, "without": true}

// Prompts are sentence openings of 2-4 words without a negation (the annotator scores the
// continuation alone); references continue them with 4-16 words.
func TestReviewsExampleShape(t *testing.T) {
	r, err := Builtin("reviews")
	if err != nil {
		t.Fatal(err)
	}
	checkOpening := func(where, p string) {
		n := len(strings.Fields(p))
		if n < 2 || n > 4 || strings.TrimSpace(p) != p {
			t.Errorf("%s: prompt %q is not a 2-4 word opening", where, p)
		}
		for _, w := range strings.Fields(strings.ToLower(p)) {
			w = strings.Trim(w, `.,!?;:"()-`)
			if negations[w] || strings.HasSuffix(w, "n't") {
				t.Errorf("%s: prompt %q contains a negation", where, p)
			}
		}
	}
	for split, exs := range map[string][]Example{"eval": r.Eval, "validation": r.Validation} {
		for _, e := range exs {
			checkOpening(split, e.Prompt)
			n := len(strings.Fields(e.Reference))
			if !strings.HasPrefix(e.Reference, " ") || strings.HasPrefix(e.Reference, "  ") || n < 4 || n > 16 {
				t.Errorf("%s: reference %q: want a leading space and 4-16 words", split, e.Reference)
			}
		}
	}
	seen := map[string]bool{}
	for _, p := range r.Prompts {
		checkOpening("prompts", p)
		if seen[p] {
			t.Errorf("duplicate prompt %q", p)
		}
		seen[p] = true
	}
	// Every training prompt opens some training sentence (none is taken from a held-out one).
	for _, p := range r.Prompts {
		found := false
		for _, s := range r.SFT {
			if strings.HasPrefix(s, p+" ") {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("prompt %q opens no SFT sentence", p)
		}
	}
	// Plain ASCII everywhere: the base model is byte-level.
	all := append(append(append([]string{}, r.Pretrain...), r.SFT...), r.Prompts...)
	for _, e := range append(append([]Example{}, r.Eval...), r.Validation...) {
		all = append(all, e.Prompt, e.Reference)
	}
	for _, s := range all {
		for i := 0; i < len(s); i++ {
			if s[i] < 0x20 || s[i] > 0x7e {
				t.Fatalf("non-printable or non-ASCII byte %#x in %q", s[i], s)
			}
		}
	}
}

// SFT holds reviews of both polarities, so the base model writes mixed sentiment and alignment has
// room to improve.
func TestReviewsSFTIsMixed(t *testing.T) {
	raw, err := fs.ReadFile(builtinFS, "reviews/data/sft.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	pos, n := 0, 0
	for _, l := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var row struct{ Label int }
		if err := json.Unmarshal([]byte(l), &row); err != nil {
			t.Fatal(err)
		}
		pos += row.Label
		n++
	}
	if f := float64(pos) / float64(n); f < 0.3 || f > 0.5 {
		t.Errorf("positive fraction of SFT = %.2f, want in [0.3, 0.5]", f)
	}
}

func TestBuiltinReturnsFreshCopies(t *testing.T) {
	a, err := Builtin("reviews")
	if err != nil {
		t.Fatal(err)
	}
	orig := a.Eval[0]
	a.Eval[0].Prompt = "mutated"
	a.Prompts[0] = "mutated"
	b, err := Builtin("reviews")
	if err != nil {
		t.Fatal(err)
	}
	if b.Eval[0] != orig || b.Prompts[0] == "mutated" {
		t.Error("Builtin shares state between calls")
	}
}

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "mytask")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestLoadRoundTripOfBuiltin(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "reviews")
	if err := os.CopyFS(dir, mustSub(t, "reviews/data")); err != nil {
		t.Fatal(err)
	}
	got, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := Builtin("reviews")
	if !reflect.DeepEqual(got, want) {
		t.Error("Load(copy of the reviews data) differs from Builtin(\"reviews\")")
	}
}

func mustSub(t *testing.T, dir string) fs.FS {
	sub, err := fs.Sub(builtinFS, dir)
	if err != nil {
		t.Fatal(err)
	}
	return sub
}

func TestLoad(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"pretrain.jsonl":   `{"text":"one doc"}` + "\n" + `{"text":"two docs","source":"x"}` + "\n",
		"sft.jsonl":        `{"text":"a review","label":1,"group":"yelp-positive"}` + "\n\n" + `{"text":"another"}` + "\n",
		"prompts.jsonl":    `{"prompt":"The food"}` + "\r\n" + `{"prompt":"I \"quote\""}`,
		"validation.jsonl": `{"prompt":"It","reference":" works."}`,
		"eval.jsonl":       `{"prompt":"It was","reference":" fine."}` + "\n",
	})
	got, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := &Task{
		Name:       "mytask",
		Pretrain:   []string{"one doc", "two docs"},
		SFT:        []string{"a review", "another"},
		SFTGroups:  []string{"yelp-positive", ""},
		Prompts:    []string{"The food", `I "quote"`},
		Validation: []Example{{"It", " works."}},
		Eval:       []Example{{"It was", " fine."}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Load = %+v, want %+v", got, want)
	}

	// Only prompts and eval are required; pretrain.txt keeps lines verbatim, skipping blank ones.
	dir = writeFiles(t, map[string]string{
		"pretrain.txt":  "first line\n\n  indented line\r\nlast",
		"prompts.jsonl": `{"prompt":"A"}`,
		"eval.jsonl":    `{"prompt":"B","reference":" c"}`,
	})
	got, err = Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Pretrain, []string{"first line", "  indented line", "last"}) || got.SFT != nil || got.SFTGroups != nil || got.Validation != nil {
		t.Errorf("Load = %+v", got)
	}
}

func TestLoadErrors(t *testing.T) {
	good := map[string]string{
		"prompts.jsonl": `{"prompt":"A"}` + "\n",
		"eval.jsonl":    `{"prompt":"B","reference":" c"}` + "\n",
	}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range good {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "" {
				delete(m, kv[i])
			} else {
				m[kv[i]] = kv[i+1]
			}
		}
		return m
	}
	cases := []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"bad json", with("eval.jsonl", `{"prompt":"B","reference":" c"}`+"\n\n"+`{"prompt": "x", "reference": `+"\n"), "eval.jsonl:3:"},
		{"missing field", with("prompts.jsonl", `{"prompt":"A"}`+"\n"+`{"text":"A"}`), `prompts.jsonl:2: missing field "prompt"`},
		{"empty field", with("eval.jsonl", `{"prompt":"B","reference":"  "}`), `eval.jsonl:1: field "reference" is empty`},
		{"not a string", with("sft.jsonl", `{"text":"ok"}`+"\n"+`{"text":3}`), `sft.jsonl:2: field "text" is not a string`},
		{"group not a string", with("sft.jsonl", `{"text":"ok","group":1}`), `sft.jsonl:1: field "group" is not a string`},
		{"not an object", with("validation.jsonl", `["prompt"]`), "validation.jsonl:1:"},
		{"null line", with("pretrain.jsonl", `null`), "pretrain.jsonl:1: not a JSON object"},
		{"both pretrain files", with("pretrain.txt", "x", "pretrain.jsonl", `{"text":"x"}`), "both pretrain.txt and pretrain.jsonl"},
		{"no eval", with("eval.jsonl", ""), "eval.jsonl: missing"},
		{"no prompts", with("prompts.jsonl", ""), "prompts.jsonl: missing"},
		{"empty prompts", with("prompts.jsonl", "\n\n"), "prompts.jsonl: no prompts"},
	}
	for _, c := range cases {
		dir := writeFiles(t, c.files)
		_, err := Load(dir)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to contain %q", c.name, err, c.want)
			continue
		}
		if !strings.Contains(err.Error(), dir) {
			t.Errorf("%s: error %v does not name the folder", c.name, err)
		}
	}
	if _, err := Load(filepath.Join(t.TempDir(), "absent")); err == nil {
		t.Error("Load(absent folder) succeeded")
	}
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, []byte("x"), 0o644)
	if _, err := Load(f); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("Load(file) error = %v", err)
	}
}
