package task

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"
)

// fzHead returns the first n lines of a file of the built-in task.
func fzHead(f *testing.F, file string, n int) []byte {
	b, err := os.ReadFile("reviews/data/" + file)
	if err != nil {
		f.Fatal(err)
	}
	lines := bytes.SplitAfter(b, []byte("\n"))
	return bytes.Join(lines[:min(n, len(lines))], nil)
}

// fzNonBlankLines counts the lines bufio.ScanLines yields that are not blank.
func fzNonBlankLines(b []byte) int {
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) > 0 {
			n++
		}
	}
	return n
}

// fzJSONL renders rows as JSON lines.
func fzJSONL[T any](t *testing.T, rows []T) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for _, r := range rows {
		if err := enc.Encode(r); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

// FuzzLoad: the JSONL readers of a task folder (prompts.jsonl, eval.jsonl, sft.jsonl)
// return an error naming the file, or at most one non-blank string per non-blank line
// (each at most 3x its line: invalid UTF-8 bytes become U+FFFD), and what they return
// round-trips through a file written back as JSON lines.
func FuzzLoad(f *testing.F) {
	f.Add(fzHead(f, "prompts.jsonl", 3), fzHead(f, "eval.jsonl", 2), fzHead(f, "sft.jsonl", 2))
	f.Add([]byte("\n  {\"prompt\": \"a\\u00e9\\ud83d\\ude42\", \"x\": [1]}\r\n\n"),
		[]byte(`{"reference": " b", "prompt": "a", "prompt": "c"}`), []byte{})
	f.Add([]byte(`{"prompt": " "}`), []byte(`null`), []byte(`{"text": 3}`))
	f.Add([]byte(`{"prompt": "x"} {"prompt": "y"}`), []byte(`[{"prompt": "a", "reference": "b"}]`), []byte(`{"text": "\xff"}`))
	f.Fuzz(func(t *testing.T, prompts, eval, sft []byte) {
		fsys := fstest.MapFS{
			"prompts.jsonl": {Data: prompts},
			"eval.jsonl":    {Data: eval},
			"sft.jsonl":     {Data: sft},
		}
		task, err := load(fsys, "fuzz", "dir", Files{})
		if err != nil {
			if task != nil {
				t.Fatalf("error %v with a task", err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "dir/prompts.jsonl:") && !strings.HasPrefix(msg, "dir/eval.jsonl:") && !strings.HasPrefix(msg, "dir/sft.jsonl:") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if len(task.Prompts) == 0 || len(task.Eval) == 0 {
			t.Fatalf("accepted a task with %d prompts and %d eval examples", len(task.Prompts), len(task.Eval))
		}
		check := func(file string, in []byte, n int, texts ...string) {
			if lines := fzNonBlankLines(in); n > lines {
				t.Fatalf("%s: %d records from %d non-blank lines", file, n, lines)
			}
			size := 0
			for _, s := range texts {
				if strings.TrimSpace(s) == "" {
					t.Fatalf("%s: accepted a blank field %q", file, s)
				}
				size += len(s)
			}
			if size > 3*len(in) {
				t.Fatalf("%s: %d bytes of text from %d bytes of input", file, size, len(in))
			}
		}
		check("prompts.jsonl", prompts, len(task.Prompts), task.Prompts...)
		var evalText []string
		for _, e := range task.Eval {
			evalText = append(evalText, e.Prompt, e.Reference)
		}
		check("eval.jsonl", eval, len(task.Eval), evalText...)
		check("sft.jsonl", sft, len(task.SFT), task.SFT...)

		type p struct {
			Prompt string `json:"prompt"`
		}
		type s struct {
			Text  string `json:"text"`
			Group string `json:"group,omitempty"`
		}
		var ps []p
		for _, x := range task.Prompts {
			ps = append(ps, p{x})
		}
		var ss []s
		if task.SFTGroups != nil && len(task.SFTGroups) != len(task.SFT) {
			t.Fatalf("%d SFT groups for %d texts", len(task.SFTGroups), len(task.SFT))
		}
		for i, x := range task.SFT {
			g := ""
			if task.SFTGroups != nil {
				g = task.SFTGroups[i]
			}
			ss = append(ss, s{x, g})
		}
		back, err := load(fstest.MapFS{
			"prompts.jsonl": {Data: fzJSONL(t, ps)},
			"eval.jsonl":    {Data: fzJSONL(t, task.Eval)},
			"sft.jsonl":     {Data: fzJSONL(t, ss)},
		}, "fuzz", "dir", Files{})
		if err != nil {
			t.Fatalf("reading the task written back: %v", err)
		}
		if !reflect.DeepEqual(back, task) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", back, task)
		}
	})
}
