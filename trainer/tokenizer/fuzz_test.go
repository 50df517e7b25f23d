package tokenizer

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// Fuzz targets for the tokenizer files a model directory brings: vocab.json +
// merges.txt (ParseBPE) and tokenizer_config.json (FromDir). hack/fuzz.sh runs them
// for a few seconds each.

// fzTinyVocab is the vocabulary of writeTiny (the 256 byte symbols, six merge
// results, "<|endoftext|>") as compact JSON, and its merges.txt.
func fzTinyVocab() (vocab []byte, merges string) {
	enc, _ := bytesToUnicode()
	v := map[string]int{}
	for b := 0; b < 256; b++ {
		v[string(enc[b])] = b
	}
	ms := []string{"Ġ t", "h e", "Ġt he", "l o", "lo w", "e r"}
	for i, m := range ms {
		v[strings.ReplaceAll(m, " ", "")] = 256 + i
	}
	v[EndOfText] = 262
	vb, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return vb, "#version: 0.2\n" + strings.Join(ms, "\n") + "\n"
}

// FuzzParseBPE: ParseBPE returns an error or a tokenizer whose vocabulary table is
// proportional to vocab.json (ids may leave holes, but a few bytes of JSON must not
// size a table of millions of entries), with the end-of-text token in range, and that
// encodes any text to ids inside the vocabulary which decode back to the text exactly
// (byte-level BPE is lossless), the same on the cached second call.
func FuzzParseBPE(f *testing.F) {
	vocab, merges := fzTinyVocab()
	for _, s := range []string{"the lower", "  the<|endoftext|> lowest", "émoji 🙂 \x00\xff\xc3", ""} {
		f.Add(vocab, []byte(merges), s)
	}
	f.Add(vocab, []byte("Ġ t\r\n\r\nh e\nh e\n"), "the the")
	// Holes in the ids, no "<|endoftext|>" (it gets the next id).
	sparse := strings.Replace(string(vocab), `"<|endoftext|>":262`, `"Ġthe":300`, 1)
	f.Add([]byte(sparse), []byte("#version: 0.2\nĠ t\n"), " the")
	f.Add(vocab, []byte("a b c\n"), "x")
	f.Add([]byte(`{"a": 1, "a": 2}`), []byte{}, "a")
	f.Add([]byte(`{"a": 16777216}`), []byte{}, "a")
	f.Add([]byte(`[]`), []byte{}, "")
	f.Fuzz(func(t *testing.T, vocabJSON, mergesTxt []byte, text string) {
		tok, err := ParseBPE("vocab.json", vocabJSON, "merges.txt", strings.NewReader(string(mergesTxt)))
		if err != nil {
			if tok != nil {
				t.Fatalf("error %v with a tokenizer", err)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, "vocab.json:") && !strings.HasPrefix(msg, "merges.txt:") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if n := tok.VocabSize(); n < 257 || n > 2*len(vocabJSON)+1024 {
			t.Fatalf("vocabulary table of %d entries from a %d-byte vocab.json", n, len(vocabJSON))
		}
		if eot := tok.EOT(); eot < 0 || eot >= tok.VocabSize() || tok.Token(eot) != EndOfText {
			t.Fatalf("EOT %d (token %q) outside the vocabulary of %d", eot, tok.Token(eot), tok.VocabSize())
		}
		if len(text) > 1024 { // merging is quadratic in the length of a word
			text = text[:1024]
		}
		ids := tok.Encode(text)
		for _, id := range ids {
			if id < 0 || id >= tok.VocabSize() {
				t.Fatalf("Encode(%q) produced id %d outside [0,%d)", text, id, tok.VocabSize())
			}
		}
		if back := tok.Decode(ids); back != text {
			t.Fatalf("Decode(Encode(%q)) = %q (ids %v)", text, back, ids)
		}
		if again := tok.Encode(text); !reflect.DeepEqual(again, ids) {
			t.Fatalf("Encode(%q) = %v, then %v (cache)", text, ids, again)
		}
	})
}

// FuzzTokenizerConfig: FromDir, given only a tokenizer_config.json, returns the byte
// tokenizer exactly when "tokenizer_class" says byte (or says nothing), an error
// naming the missing vocabulary for the BPE classes, and an error naming the file for
// anything else; it never panics.
func FuzzTokenizerConfig(f *testing.F) {
	b, err := os.ReadFile("../task/models/tiny-reviews/tokenizer_config.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	for _, s := range []string{
		`{"tokenizer_class": "GPT2TokenizerFast", "model_max_length": 1024}`,
		`{"tokenizer_class": "ByteTokenizer"}`, `{"tokenizer_class": "LlamaTokenizer"}`,
		`{}`, `null`, `[]`, `{"tokenizer_class": 3}`, ``,
	} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	path := filepath.Join(dir, ConfigFile)
	f.Fuzz(func(t *testing.T, cfg []byte) {
		if err := os.WriteFile(path, cfg, 0o644); err != nil {
			t.Fatal(err)
		}
		tok, err := FromDir(dir)
		var parsed struct {
			TokenizerClass string `json:"tokenizer_class"`
		}
		if json.Unmarshal(cfg, &parsed) != nil {
			if err == nil || !strings.Contains(err.Error(), path) {
				t.Fatalf("unparsable config accepted or error without the file name: %v, %v", tok, err)
			}
			return
		}
		switch class := strings.ToLower(parsed.TokenizerClass); class {
		case "", "byte", "bytetokenizer":
			if err != nil || tok != (Byte{}) {
				t.Fatalf("class %q: got %v, %v; want the byte tokenizer", class, tok, err)
			}
		case "bpe", "gpt2tokenizer", "gpt2tokenizerfast":
			if err == nil || !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("class %q without vocab.json: got %v, %v", class, tok, err)
			}
		default:
			if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "tokenizer_class") {
				t.Fatalf("class %q: got %v, %v; want an error naming the file and key", class, tok, err)
			}
		}
	})
}

// TestParseBPESparseIDs is the regression test for the memory bomb FuzzParseBPE's
// size property caught (seed testdata/fuzz/FuzzParseBPE/sparse-ids-memory-bomb): one
// id of 2^24 in a 2 KB vocab.json sized a 16.7M-entry table (256 MB). Such ids are now
// an error naming the line and token; a few holes still load.
func TestParseBPESparseIDs(t *testing.T) {
	vocab, merges := fzTinyVocab()
	bomb := strings.Replace(string(vocab), `"Ġthe":258`, `"Ġthe":16777216`, 1)
	_, err := ParseBPE("vocab.json", []byte(bomb), "merges.txt", strings.NewReader(merges))
	if err == nil || !strings.Contains(err.Error(), `vocab.json:1: id 16777216 of "Ġthe" leaves too many unused ids for a vocabulary of 263 tokens`) {
		t.Fatalf("want an error naming the id and token, got %v", err)
	}
	holes := strings.Replace(string(vocab), `"Ġthe":258`, `"Ġthe":1500`, 1)
	tok, err := ParseBPE("vocab.json", []byte(holes), "merges.txt", strings.NewReader(merges))
	if err != nil || tok.VocabSize() != 1501 || !reflect.DeepEqual(tok.Encode(" the"), []int{1500}) {
		t.Fatalf("a vocabulary with holes: %v", err)
	}
}
