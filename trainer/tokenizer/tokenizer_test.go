package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var edgeCases = []string{
	"", " ", "  ", "a", "Hello world", "  leading", "trailing  ", "a  b", "a\n\nb", "tab\tsep",
	"don't I'll we've they're", "x 's", "'S 'sx ''s", "12345 abc", "émoji 🙂 test", "日本語テキスト",
	" \n ", "a\u00a0b", "x\r\n\r\ny", "٣٤ numbers ½", "hi!\n  there", "\x00\x01\xff invalid utf8 \xc3",
	"<|endoftext|>", "a<|endoftext|>b<|endoftext|>", "<|endoftext", "\u200b zero width\u3000ideographic space",
}

func TestByteRoundTrip(t *testing.T) {
	var tok Tokenizer = Byte{}
	if tok.VocabSize() != 257 || tok.EOT() != 256 {
		t.Fatalf("vocab %d eot %d", tok.VocabSize(), tok.EOT())
	}
	for _, s := range edgeCases {
		ids := tok.Encode(s)
		if len(ids) != len(s) {
			t.Errorf("%q: %d ids for %d bytes", s, len(ids), len(s))
		}
		if got := tok.Decode(ids); got != s {
			t.Errorf("round trip %q -> %q", s, got)
		}
	}
	if got := tok.Decode([]int{104, 256, 105, -1, 300}); got != "hi" {
		t.Errorf("Decode drops EOT and out-of-range ids: got %q", got)
	}
}

// TestPreTokenize compares with the output of Python's `regex` module on GPT-2's
// pattern (testdata/pretokenize.json, generated once; see the file's cases).
func TestPreTokenize(t *testing.T) {
	b, err := os.ReadFile("testdata/pretokenize.json")
	if err != nil {
		t.Fatal(err)
	}
	var cases [][2]json.RawMessage
	if err := json.Unmarshal(b, &cases); err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		var in string
		var want []string
		if err := json.Unmarshal(c[0], &in); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(c[1], &want); err != nil {
			t.Fatal(err)
		}
		got := PreTokenize(in)
		if len(got) == 0 && len(want) == 0 {
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("PreTokenize(%q) = %q, want %q", in, got, want)
		}
	}
}

// writeTiny writes a vocabulary of the 256 byte symbols (id = byte value) plus the
// merge results below and "<|endoftext|>", and the merges in rank order.
func writeTiny(t *testing.T, dir string) {
	t.Helper()
	enc, _ := bytesToUnicode()
	vocab := map[string]int{}
	for b := 0; b < 256; b++ {
		vocab[string(enc[b])] = b
	}
	merges := []string{"Ġ t", "h e", "Ġt he", "l o", "lo w", "e r"}
	for i, m := range merges {
		vocab[strings.ReplaceAll(m, " ", "")] = 256 + i
	}
	vocab[EndOfText] = 262
	vb, _ := json.MarshalIndent(vocab, "", " ")
	if err := os.WriteFile(filepath.Join(dir, VocabFile), vb, 0o644); err != nil {
		t.Fatal(err)
	}
	mb := "#version: 0.2\n" + strings.Join(merges, "\n") + "\n"
	if err := os.WriteFile(filepath.Join(dir, MergesFile), []byte(mb), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestBPEHandComputed(t *testing.T) {
	dir := t.TempDir()
	writeTiny(t, dir)
	tok, err := FromDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := tok.(*BPE); !ok {
		t.Fatalf("FromDir picked %T, want *BPE", tok)
	}
	if tok.VocabSize() != 263 || tok.EOT() != 262 {
		t.Fatalf("vocab %d eot %d", tok.VocabSize(), tok.EOT())
	}
	// Worked by hand (ids: bytes are their value, Ġt=256 he=257 Ġthe=258 lo=259 low=260 er=261):
	//  "the"    -> t h e -> (h e, rank 1) -> t he                       = [116 257]
	//  " lower" -> Ġ l o w e r -> (l o, 3) -> Ġ lo w e r -> (lo w, 4)
	//           -> Ġ low e r -> (e r, 5) -> Ġ low er                    = [32 260 261]
	//  " the"   -> Ġ t h e -> (Ġ t, 0) -> Ġt h e -> (h e, 1) -> Ġt he
	//           -> (Ġt he, 2) -> Ġthe                                   = [258]
	//  "  the"  -> pre-tokens " ", " the"                               = [32 258]
	//  "lowest" -> lo w e s t -> low e s t (no "e s" merge)             = [260 101 115 116]
	cases := []struct {
		in   string
		want []int
	}{
		{"the", []int{116, 257}},
		{" lower", []int{32, 260, 261}},
		{"the lower", []int{116, 257, 32, 260, 261}},
		{" the", []int{258}},
		{"  the", []int{32, 258}},
		{"lowest", []int{260, 101, 115, 116}},
		{"the<|endoftext|> the", []int{116, 257, 262, 258}},
		{"é", []int{0xc3, 0xa9}},
	}
	for _, c := range cases {
		got := tok.Encode(c.in)
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("Encode(%q) = %v, want %v", c.in, got, c.want)
		}
		if back := tok.Decode(got); back != c.in {
			t.Errorf("Decode(Encode(%q)) = %q", c.in, back)
		}
		if again := tok.Encode(c.in); !reflect.DeepEqual(again, c.want) { // cached path
			t.Errorf("cached Encode(%q) = %v", c.in, again)
		}
	}
}

func TestBPERoundTrip(t *testing.T) {
	dir := t.TempDir()
	writeTiny(t, dir)
	tok, err := FromDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range edgeCases {
		ids := tok.Encode(s)
		for _, id := range ids {
			if id < 0 || id >= tok.VocabSize() {
				t.Fatalf("%q: id %d outside the vocabulary", s, id)
			}
		}
		if got := tok.Decode(ids); got != s {
			t.Errorf("round trip %q -> %v -> %q", s, ids, got)
		}
	}
}

func TestFromDirSelection(t *testing.T) {
	empty := t.TempDir()
	tok, err := FromDir(empty)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := tok.(Byte); !ok {
		t.Errorf("empty dir: got %T, want Byte", tok)
	}
	dir := t.TempDir()
	writeTiny(t, dir)
	if err := os.WriteFile(filepath.Join(dir, ConfigFile), []byte(`{"tokenizer_class":"byte"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if tok, err = FromDir(dir); err != nil {
		t.Fatal(err)
	} else if _, ok := tok.(Byte); !ok {
		t.Errorf("tokenizer_class byte: got %T", tok)
	}
	if err := os.WriteFile(filepath.Join(empty, ConfigFile), []byte(`{"tokenizer_class":"GPT2Tokenizer"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := FromDir(empty); err == nil || !strings.Contains(err.Error(), VocabFile) {
		t.Errorf("GPT2Tokenizer without files: err = %v", err)
	}
}

func TestMalformedFilesNameFileAndLine(t *testing.T) {
	enc, _ := bytesToUnicode()
	var sb strings.Builder
	sb.WriteString("{\n")
	for b := 0; b < 256; b++ {
		k, _ := json.Marshal(string(enc[b]))
		sb.WriteString(" " + string(k) + ": " + itoa(b) + ",\n") // byte b is on line b+2
	}
	goodVocab := sb.String() + " \"ab\": 256\n}\n"
	cases := []struct {
		name, vocab, merges, want string
	}{
		{"string id", strings.Replace(goodVocab, `"a": 97,`, `"a": "x",`, 1), "a b\n", "vocab.json:99:"},
		{"negative id", strings.Replace(goodVocab, `"a": 97,`, `"a": -3,`, 1), "a b\n", "vocab.json:99:"},
		{"missing comma", strings.Replace(goodVocab, `"a": 97,`, `"a": 97`, 1), "a b\n", "vocab.json:100:"},
		{"duplicate id", strings.Replace(goodVocab, `"a": 97,`, `"a": 96,`, 1), "a b\n", "vocab.json:99:"},
		{"truncated", goodVocab[:len(goodVocab)-3], "a b\n", "vocab.json:"},
		{"three symbols", goodVocab, "#version: 0.2\na b\na b c\n", "merges.txt:3:"},
		{"one symbol", goodVocab, "a b\nab\n", "merges.txt:2:"},
		{"unknown merge result", goodVocab, "a b\nb c\n", "merges.txt:2:"},
		{"missing byte", strings.Replace(goodVocab, ` "a": 97,`+"\n", "", 1), "", "vocab.json: byte 0x61"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, VocabFile), []byte(c.vocab), 0o644)
			os.WriteFile(filepath.Join(dir, MergesFile), []byte(c.merges), 0o644)
			_, err := LoadBPE(filepath.Join(dir, VocabFile), filepath.Join(dir, MergesFile))
			if err == nil {
				t.Fatalf("no error, want %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not contain %q", err, c.want)
			}
			t.Log(err)
		})
	}
	// And the good one loads.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, VocabFile), []byte(goodVocab), 0o644)
	os.WriteFile(filepath.Join(dir, MergesFile), []byte("a b\n"), 0o644)
	tok, err := LoadBPE(filepath.Join(dir, VocabFile), filepath.Join(dir, MergesFile))
	if err != nil {
		t.Fatal(err)
	}
	if got := tok.Encode("cab"); !reflect.DeepEqual(got, []int{99, 256}) {
		t.Errorf("Encode(cab) = %v", got)
	}
	if tok.EOT() != 257 || tok.VocabSize() != 258 {
		t.Errorf("no <|endoftext|> in vocab: EOT %d VocabSize %d, want 257 258", tok.EOT(), tok.VocabSize())
	}
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}

func TestBPEConcurrentEncode(t *testing.T) {
	dir := t.TempDir()
	writeTiny(t, dir)
	tok, err := FromDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := make([][]int, len(edgeCases))
	for i, s := range edgeCases {
		want[i] = tok.Encode(s)
	}
	done := make(chan struct{})
	for g := 0; g < 4; g++ {
		go func() {
			defer func() { done <- struct{}{} }()
			for r := 0; r < 50; r++ {
				for i, s := range edgeCases {
					if got := tok.Encode(s); !reflect.DeepEqual(got, want[i]) {
						t.Errorf("concurrent Encode(%q) = %v", s, got)
						return
					}
				}
			}
		}()
	}
	for g := 0; g < 4; g++ {
		<-done
	}
}
