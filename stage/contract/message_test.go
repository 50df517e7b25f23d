package contract

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/bpo-dev/bpo/api/v1alpha1"
)

func f64(v float64) *float64 { return &v }

func TestEncodeResultFitsTerminationMessage(t *testing.T) {
	cases := map[string]struct {
		msg     string
		wantMsg func(string) bool
	}{
		"short message kept":     {msg: "ok", wantMsg: func(s string) bool { return s == "ok" }},
		"long message shortened": {msg: strings.Repeat("x", 10000), wantMsg: func(s string) bool { return strings.HasSuffix(s, "…") && len(s) < MaxResultBytes }},
		"multibyte message cut at a character": {msg: strings.Repeat("é", 3000), wantMsg: func(s string) bool {
			return strings.HasSuffix(s, "…") && strings.Trim(s, "é…") == ""
		}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			r := v1alpha1.StageResult{Stage: "train", Phase: 2, Index: 1, Loss: f64(0.6931), Pairs: 128, Message: tc.msg}
			data, err := EncodeResult(r)
			if err != nil {
				t.Fatal(err)
			}
			if len(data) > MaxResultBytes {
				t.Fatalf("encoded %d bytes, limit %d", len(data), MaxResultBytes)
			}
			back, err := ReadResult(string(data))
			if err != nil {
				t.Fatalf("not readable after shortening: %v", err)
			}
			wantMsg := back.Message
			r.Message = ""
			back.Message = ""
			if d := cmp.Diff(r, back); d != "" {
				t.Fatalf("numbers changed:\n%s", d)
			}
			if !tc.wantMsg(wantMsg) {
				t.Fatalf("message %q (%d bytes) not as expected", wantMsg[:min(40, len(wantMsg))], len(wantMsg))
			}
		})
	}
	// A document over the bound without a message to shorten is an error, not a cut document.
	if _, err := EncodeResult(v1alpha1.StageResult{Stage: "train", Checkpoint: strings.Repeat("c", MaxResultBytes)}); err == nil {
		t.Error("encoded a result over the termination-message limit")
	}
}

func TestWriteResult(t *testing.T) {
	path := filepath.Join(t.TempDir(), "termination-log")
	var out strings.Builder
	if err := WriteResult(v1alpha1.StageResult{Stage: "sample", Samples: 64}, path, &out); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if out.String() != string(data)+"\n" || !strings.Contains(string(data), `"samples":64`) {
		t.Fatalf("file %q, stdout %q", data, out.String())
	}
	if err := WriteResult(v1alpha1.StageResult{}, filepath.Join(path, "not-a-dir", "x"), nil); err == nil || !strings.Contains(err.Error(), "termination log") {
		t.Fatalf("unwritable termination log: %v", err)
	}
}

func TestReadResult(t *testing.T) {
	cases := map[string]struct {
		msg     string
		want    v1alpha1.StageResult
		wantErr string
	}{
		"a result":             {msg: " {\"stage\":\"label\",\"phase\":1,\"index\":2,\"pairs\":5}\n", want: v1alpha1.StageResult{Stage: "label", Phase: 1, Index: 2, Pairs: 5}},
		"null is no result":    {msg: "null", wantErr: "not a JSON object"},
		"a log tail":           {msg: "panic: boom", wantErr: "not a JSON object"},
		"trailing text":        {msg: `{"stage":"train"} more`, wantErr: "invalid character"},
		"negative count":       {msg: `{"stage":"label","pairs":-1}`, wantErr: "negative count"},
		"negative guard count": {msg: `{"stage":"label","guardDecided":-1}`, wantErr: "negative count"},
		"checkpoint too long":  {msg: `{"stage":"train","checkpoint":"` + strings.Repeat("a", MaxCheckpointBytes+1) + `"}`, wantErr: "checkpoint is 1025 bytes, over 1024"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := ReadResult(tc.msg)
			if (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
			if err == nil {
				if d := cmp.Diff(tc.want, got); d != "" {
					t.Fatal(d)
				}
			}
		})
	}
}

func TestFailureText(t *testing.T) {
	res, _ := json.Marshal(v1alpha1.StageResult{Stage: "train", Message: "step 41: loss is NaN"})
	cases := map[string]string{
		string(res) + "\n":            "step 41: loss is NaN",
		"  Traceback: boom\n":         "Traceback: boom",
		`{"stage":"train","phase":1}`: `{"stage":"train","phase":1}`,
		"":                            "",
	}
	for msg, want := range cases {
		if got := FailureText(msg); got != want {
			t.Errorf("FailureText(%q) = %q, want %q", msg, got, want)
		}
	}
}
