package storage

import (
	"strings"
	"testing"
)

func TestCheckKey(t *testing.T) {
	for _, tc := range []struct {
		key  string
		want string // "" = valid, else a part of the error
	}{
		{"owner.json", ""},
		{"phase-1/samples/shard-0.jsonl", ""},
		{"phase-1/members/member-0/adapter.safetensors", ""},
		{"a.tmp", ""},    // not a temp name: no hex stamp
		{"x.tmpl", ""},   // not a temp name
		{"a.zz.tmp", ""}, // "zz" is not hex
		{"", "is empty"},
		{"/owner.json", "starts with '/'"},
		{"phase-1/", "ends with '/'"},
		{"a//b", "empty path segment"},
		{"a/../b", `".." segment`},
		{"./a", `"." segment`},
		{`a\b`, `contains '\'`},
		{"a\nb", "control character"},
		{"phase-1/x.jsonl.18a2b3c4d5.tmp", "temporary file"},
		{"phase-1/.x.jsonl.tmp-123", "temporary file"},
	} {
		err := checkKey("key", tc.key)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("checkKey(%q) = %v, want nil", tc.key, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("checkKey(%q) = %v, want an error containing %q", tc.key, err, tc.want)
		case err != nil && !strings.HasPrefix(err.Error(), "key "):
			t.Errorf("checkKey(%q) = %v: the error must name the field", tc.key, err)
		}
	}
}

func TestCheckPrefixAndJoin(t *testing.T) {
	for _, tc := range []struct{ in, want string }{{"", ""}, {"/", ""}, {"runs", "runs"}, {"runs/", "runs"}, {"a/b/", "a/b"}} {
		if got, err := checkPrefix("p", tc.in); err != nil || got != tc.want {
			t.Errorf("checkPrefix(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	if _, err := checkPrefix("p", "../x"); err == nil {
		t.Error(`checkPrefix("../x") accepted a prefix that escapes the store`)
	}
	for _, tc := range []struct{ p, k, want string }{{"", "a", "a"}, {"p", "", "p"}, {"p", "a/b", "p/a/b"}, {"", "", ""}} {
		if got := join(tc.p, tc.k); got != tc.want {
			t.Errorf("join(%q, %q) = %q, want %q", tc.p, tc.k, got, tc.want)
		}
	}
}

func TestParseURI(t *testing.T) {
	for _, tc := range []struct {
		uri, want, err string
	}{
		{"s3://bucket", "s3://bucket", ""},
		{"s3://bucket/", "s3://bucket", ""},
		{"s3://bucket/team/runs/", "s3://bucket/team/runs", ""},
		{"gs://bucket/runs", "gs://bucket/runs", ""},
		{"file:///workspace", "file:///workspace", ""},
		{"file:///workspace/", "file:///workspace", ""},
		{"file://localhost/workspace", "file:///workspace", ""},
		{"", "", "is empty"},
		{"bucket/runs", "", "has no scheme"},
		{"http://bucket/runs", "", `scheme "http" is not supported`},
		{"s3:///runs", "", "names no bucket"},
		{"s3://bucket/a//b", "", "empty path segment"},
		{"s3://bucket/runs?region=eu-west-1", "", "set endpoint, region and path style in Options"},
		{"file://workspace", "", "three slashes"},
		{"file:///", "", "whole file system"},
	} {
		loc, err := parseURI(tc.uri)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseURI(%q) = %v, want an error containing %q", tc.uri, err, tc.err)
			}
			continue
		}
		if err != nil || loc.String() != tc.want {
			t.Errorf("parseURI(%q) = %q, %v; want %q", tc.uri, loc.String(), err, tc.want)
		}
	}
}

func TestParseURINeverEchoesCredentials(t *testing.T) {
	for _, uri := range []string{
		"s3://AKIAEXAMPLE:s3cr3tValue@bucket/runs",
		"s3://AKIAEXAMPLE:s3cr3tValue@bucket/runs?x=%zz", // also unparseable
		"file://user:s3cr3tValue@/workspace",
	} {
		_, err := parseURI(uri)
		if err == nil {
			t.Fatalf("parseURI(%q) accepted credentials in the URI", uri)
		}
		if strings.Contains(err.Error(), "s3cr3tValue") || strings.Contains(err.Error(), "AKIAEXAMPLE") {
			t.Errorf("parseURI error echoes a credential: %v", err)
		}
	}
}

func TestIsTempName(t *testing.T) {
	for name, want := range map[string]bool{
		"shard-0.jsonl.18a2b3c4d5e6f.tmp": true,  // fileblob
		".shard-0.jsonl.tmp-12345":        true,  // pipeline.writeFileAtomic
		"shard-0.jsonl":                   false, // data
		"notes.tmp":                       false, // a user's file
		"shard-0.jsonl.TMP":               false,
		"x..tmp":                          false,
	} {
		if got := isTempName(name); got != want {
			t.Errorf("isTempName(%q) = %v, want %v", name, got, want)
		}
	}
}
