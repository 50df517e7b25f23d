package serve

import (
	"math"
	"reflect"
	"testing"

	"github.com/bpo-dev/bpo/trainer/tokenizer"
)

func TestFirstStop(t *testing.T) {
	for _, c := range []struct {
		text  string
		stops []string
		from  int
		want  int
	}{
		{"hello world", []string{"wor"}, 0, 6},
		{"hello world", []string{"wor", "o"}, 0, 4},
		{"hello world", []string{"xyz"}, 0, -1},
		{"hello world", nil, 0, -1},
		// A stop that straddles the previous text and the new token is found...
		{"hello world", []string{"lo w"}, 5, 3},
		// ...but one wholly inside text already checked is not looked for again.
		{"hello world", []string{"he"}, 5, -1},
		{"ab", []string{"abc"}, 2, -1},
	} {
		if got := firstStop(c.text, c.stops, c.from); got != c.want {
			t.Errorf("firstStop(%q, %q, %d) = %d, want %d", c.text, c.stops, c.from, got, c.want)
		}
	}
}

func TestTopTokens(t *testing.T) {
	logits := []float64{1, 3, 2, 3, -1}
	lse := math.Log(math.Exp(1) + 2*math.Exp(3) + math.Exp(2) + math.Exp(-1))
	got := topTokens(logits, lse, 3)
	want := []tokenLP{{1, 3 - lse}, {3, 3 - lse}, {2, 2 - lse}} // ties: lower id first
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("top 3 %v, want %v", got, want)
	}
	if got := topTokens(logits, lse, 0); got != nil {
		t.Fatalf("top 0: %v", got)
	}
	if got := topTokens(logits, lse, 9); len(got) != 5 || got[4].id != 4 {
		t.Fatalf("top 9 of 5: %v", got)
	}
}

func TestParsePromptForms(t *testing.T) {
	for _, c := range []struct {
		raw  string
		want []promptIn
	}{
		{`"hi"`, []promptIn{{Text: "hi"}}},
		{`["a", "b"]`, []promptIn{{Text: "a"}, {Text: "b"}}},
		{`[1, 2]`, []promptIn{{Tokens: []int{1, 2}}}},
		{`[[1], [2, 3]]`, []promptIn{{Tokens: []int{1}}, {Tokens: []int{2, 3}}}},
	} {
		got, e := parsePrompt([]byte(c.raw))
		if e != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: %+v %v, want %+v", c.raw, got, e, c.want)
		}
	}
	for _, raw := range []string{`["a", 1]`, `[1, "a"]`, `[[1], "a"]`, `[1.5]`, `true`} {
		if _, e := parsePrompt([]byte(raw)); e == nil || deref(e.Param) != "prompt" {
			t.Errorf("%s: accepted or wrong param: %v", raw, e)
		}
	}
}

func TestTokenString(t *testing.T) {
	tok := tokenizer.Byte{}
	for id, want := range map[int]string{'a': "a", ' ': " ", 0xe2: `bytes:\xe2`, 256: "<|endoftext|>"} {
		if got := tokenString(tok, id); got != want {
			t.Errorf("token %d: %q, want %q", id, got, want)
		}
	}
}

func TestParseLoRAModules(t *testing.T) {
	got, err := ParseLoRAModules([]string{"policy=/ws/phase-3/policy-adapter", " m0 = a/member-0.safetensors"})
	if err != nil || !reflect.DeepEqual(got, map[string]string{"policy": "/ws/phase-3/policy-adapter", "m0": "a/member-0.safetensors"}) {
		t.Fatalf("%v %v", got, err)
	}
	for _, bad := range [][]string{{"policy"}, {"=x"}, {"x="}, {"a=1", "a=2"}} {
		if _, err := ParseLoRAModules(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
