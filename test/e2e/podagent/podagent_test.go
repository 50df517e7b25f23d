package main

import (
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestRewritePaths(t *testing.T) {
	maps := []pathMapping{
		{"/workspace", "/r/pvc/ns/ws/sub"},
		{"/etc/bpo", "/r/pods/u/volumes/spec"},
		{"/dev/termination-log", "/r/pods/u/termination/bpo"},
		{"/workspace/cache", "/r/pods/u/volumes/cache"},
	}
	sortMappings(maps)
	cases := map[string]string{
		"/workspace":                             "/r/pvc/ns/ws/sub",
		"/workspace/":                            "/r/pvc/ns/ws/sub/",
		"/workspace/run/phase-1":                 "/r/pvc/ns/ws/sub/run/phase-1",
		"--workspace=/workspace":                 "--workspace=/r/pvc/ns/ws/sub",
		"/workspaces":                            "/workspaces",
		"/data/workspace":                        "/data/workspace",
		"/workspace/cache/x":                     "/r/pods/u/volumes/cache/x",
		"/etc/bpo/run.yaml":                      "/r/pods/u/volumes/spec/run.yaml",
		"/etc/bpolicy":                           "/etc/bpolicy",
		`echo "{}" > /dev/termination-log`:       `echo "{}" > /r/pods/u/termination/bpo`,
		"/dev/termination-log.bak":               "/dev/termination-log.bak",
		"a:/workspace:/etc/bpo":                  "a:/r/pvc/ns/ws/sub:/r/pods/u/volumes/spec",
		"cp '/etc/bpo/run.yaml' \"/workspace\";": "cp '/r/pods/u/volumes/spec/run.yaml' \"/r/pvc/ns/ws/sub\";",
		"no paths here":                          "no paths here",
	}
	for in, want := range cases {
		if got := rewritePaths(in, maps); got != want {
			t.Errorf("rewritePaths(%q) = %q, want %q", in, got, want)
		}
	}
	// a local path that itself contains a mount path is not rewritten twice
	tmp := []pathMapping{{"/tmp", "/tmp/agent/pods/u/volumes/tmp"}}
	if got := rewritePaths("/tmp/x", tmp); got != "/tmp/agent/pods/u/volumes/tmp/x" {
		t.Errorf("got %q", got)
	}
}

func TestExpandVars(t *testing.T) {
	env := map[string]string{"A": "1", "WS": "/w"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	cases := map[string]string{
		"$(A)":          "1",
		"x$(A)y$(WS)/z": "x1y/w/z",
		"$(MISSING)":    "$(MISSING)",
		"$$(A)":         "$(A)",
		"$HOME $(A":     "$HOME $(A",
		"cost $5":       "cost $5",
	}
	for in, want := range cases {
		if got := expandVars(in, lookup); got != want {
			t.Errorf("expandVars(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFieldRefAndImageCommand(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{
		Name: "p", Namespace: "ns", UID: "u1",
		Labels:      map[string]string{"batch.kubernetes.io/job-completion-index": "3"},
		Annotations: map[string]string{"batch.kubernetes.io/job-completion-index": "1"},
	}}
	for path, want := range map[string]string{
		"metadata.name": "p", "metadata.namespace": "ns", "metadata.uid": "u1",
		"metadata.annotations['batch.kubernetes.io/job-completion-index']": "1",
		"metadata.labels['batch.kubernetes.io/job-completion-index']":      "3",
		"status.podIP": "127.0.0.1",
	} {
		got, err := fieldRefValue(pod, "127.0.0.1", path)
		if err != nil || got != want {
			t.Errorf("fieldRefValue(%q) = %q, %v; want %q", path, got, err, want)
		}
	}
	if _, err := fieldRefValue(pod, "", "spec.bogus"); err == nil {
		t.Error("expected an error for an unsupported field")
	}
	for img, want := range map[string]string{
		"bpo": "bpo", "ghcr.io/bpo-dev/bpo:v1": "bpo", "localhost:5000/x/bpo@sha256:abc": "bpo", "busybox:1.36": "busybox",
	} {
		if got := imageCommand(img); got != want {
			t.Errorf("imageCommand(%q) = %q, want %q", img, got, want)
		}
	}
}

func TestReadTailAndLogTail(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	big := make([]byte, 5000)
	for i := range big {
		big[i] = 'a'
	}
	copy(big[len(big)-3:], "END")
	if err := os.WriteFile(p, big, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := readTail(p, maxTermMsg); len(got) != maxTermMsg || got[len(got)-3:] != "END" {
		t.Errorf("readTail: len %d", len(got))
	}
	if got := readTail(filepath.Join(t.TempDir(), "missing"), 10); got != "" {
		t.Errorf("missing file: %q", got)
	}
	var tb tailBuffer
	for i := 0; i < 200; i++ {
		_, _ = tb.Write([]byte("line\n"))
	}
	if got := tb.lastLines(maxLogMsgLines, maxLogMsgBytes); len(got) != maxLogMsgLines*5 {
		t.Errorf("lastLines: %d bytes", len(got))
	}
}
