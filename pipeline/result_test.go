package pipeline

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bpo-dev/bpo/api/v1alpha1"
)

func TestEncodeResultFitsTerminationMessage(t *testing.T) {
	loss := 0.6931
	cases := map[string]struct {
		msg     string
		wantMsg func(string) bool
	}{
		"short message kept":      {msg: "ok", wantMsg: func(s string) bool { return s == "ok" }},
		"long message shortened":  {msg: strings.Repeat("x", 10000), wantMsg: func(s string) bool { return strings.HasSuffix(s, "…") && len(s) < 4096 }},
		"multibyte message stays": {msg: strings.Repeat("é", 3000), wantMsg: func(s string) bool { return len(s) < 6000 }},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			r := v1alpha1.StageResult{Stage: "train", Phase: 2, Index: 1, Loss: &loss, Pairs: 128, Message: tc.msg}
			data, err := EncodeResult(r)
			if err != nil {
				t.Fatal(err)
			}
			if len(data) > v1alpha1.MaxStageResultBytes {
				t.Fatalf("encoded %d bytes, limit %d", len(data), v1alpha1.MaxStageResultBytes)
			}
			var back v1alpha1.StageResult
			if err := json.Unmarshal(data, &back); err != nil {
				t.Fatalf("not valid JSON after shortening: %v", err)
			}
			if back.Pairs != 128 || back.Loss == nil || *back.Loss != loss || back.Phase != 2 {
				t.Fatalf("numbers lost: %+v", back)
			}
			if !tc.wantMsg(back.Message) {
				t.Fatalf("message %q (%d bytes) not as expected", back.Message[:min(40, len(back.Message))], len(back.Message))
			}
		})
	}
}

func TestReportResultWritesTerminationLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "termination-log")
	var out strings.Builder
	if err := ReportResult(v1alpha1.StageResult{Stage: "sample", Samples: 64}, path, &out); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out.String()) != string(data) || !strings.Contains(string(data), `"samples":64`) {
		t.Fatalf("file %q, stdout %q", data, out.String())
	}
}

func TestOpenWorkspaceRefusesForeignOwner(t *testing.T) {
	base := t.TempDir()
	if _, err := OpenWorkspace(base, Owner{Name: "run-a", UID: "u1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenWorkspace(base, Owner{Name: "run-a", UID: "u1"}); err != nil {
		t.Fatalf("same owner must reopen: %v", err)
	}
	_, err := OpenWorkspace(base, Owner{Name: "run-a", UID: "u2"})
	if err == nil || !strings.Contains(err.Error(), "belongs to run") {
		t.Fatalf("foreign uid accepted: %v", err)
	}
	if err := os.WriteFile(filepath.Join(base, "run-a", ownerFile), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenWorkspace(base, Owner{Name: "run-a", UID: "u1"}); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("corrupt owner file accepted: %v", err)
	}
}

func TestReadJSONLNamesFileAndLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pairs.jsonl")
	os.WriteFile(path, []byte("{\"prompt\":\"a\"}\n\n{\"prompt\": 3}\n"), 0o644)
	type row struct {
		Prompt string `json:"prompt"`
	}
	_, err := ReadJSONL[row](path)
	if err == nil || !strings.Contains(err.Error(), "pairs.jsonl:3") {
		t.Fatalf("want file:line error, got %v", err)
	}
	os.WriteFile(path, []byte("{\"prompt\":\"a\",\"promt\":\"b\"}\n"), 0o644)
	if _, err := ReadJSONL[row](path); err == nil || !strings.Contains(err.Error(), ":1") {
		t.Fatalf("unknown field accepted: %v", err)
	}
	rows := []row{{"x"}, {"y <&>"}}
	if err := WriteJSONL(path, rows); err != nil {
		t.Fatal(err)
	}
	back, err := ReadJSONL[row](path)
	if err != nil || len(back) != 2 || back[1].Prompt != "y <&>" {
		t.Fatalf("round trip: %v %v", back, err)
	}
}
