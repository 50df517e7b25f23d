package tokenizer

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// mergesOf returns the merges of t in rank order as "left right" lines.
func mergesOf(t *testing.T, b *BPE) []string {
	t.Helper()
	_, mb, err := b.marshalFiles()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(mb), "\n"), "\n")
	if lines[0] != "#version: 0.2" {
		t.Fatalf("merges.txt starts with %q", lines[0])
	}
	return lines[1:]
}

// repeatTexts returns each word of counts as its own text, count times.
func repeatTexts(counts map[string]int) []string {
	var texts []string
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		for range counts[k] {
			texts = append(texts, k)
		}
	}
	return texts
}

// asciiID is the id of a printable ASCII byte in GPT-2's byte order ('!' is 0).
func asciiID(c byte) int { return int(c) - '!' }

func TestTrainBPEHandComputed(t *testing.T) {
	// Sennrich et al.'s example: low x5, lower x2, newest x6, widest x3 (one word per
	// text, so no leading spaces). Worked by hand, ties to the smallest (left, right):
	//   e s 9 (tie with s t 9: "e" < "s")   -> n e w es t, w i d es t
	//   es t 9                              -> n e w est,  w i d est
	//   l o 7 (tie with o w 7)              -> lo w, lo w e r
	//   lo w 7                              -> low, low e r
	//   e w 6 (ties n e 6, w est 6)         -> n ew est
	//   ew est 6 (tie n ew 6)               -> n ewest
	//   n ewest 6                           -> newest
	//   d est 3 (ties i d 3, w i 3)         -> w i dest
	//   i dest 3 (tie w i 3)                -> w idest
	//   w idest 3                           -> widest
	//   e r 2 (tie low e 2)                 -> low er
	//   low er 2                            -> lower; no pairs left.
	texts := repeatTexts(map[string]int{"low": 5, "lower": 2, "newest": 6, "widest": 3})
	want := []string{"e s", "es t", "l o", "lo w", "e w", "ew est", "n ewest", "d est", "i dest", "w idest", "e r", "low er"}

	tok, err := TrainBPE(texts, BPETrainOptions{VocabSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if got := mergesOf(t, tok); !reflect.DeepEqual(got, want) {
		t.Fatalf("merges\n got %q\nwant %q", got, want)
	}
	if tok.VocabSize() != 256+12+1 || tok.EOT() != 268 || tok.Token(268) != EndOfText {
		t.Fatalf("vocab %d eot %d (%q), want 269, 268", tok.VocabSize(), tok.EOT(), tok.Token(tok.EOT()))
	}
	for i, m := range want {
		if got := tok.Token(256 + i); got != strings.ReplaceAll(m, " ", "") {
			t.Errorf("id %d is %q, want the result of merge %q", 256+i, got, m)
		}
	}
	// Ids: es 256, est 257, lo 258, low 259, ew 260, ewest 261, newest 262, dest 263,
	// idest 264, widest 265, er 266, lower 267.
	//   "lowest" -> l o w es t -> l o w est -> lo w est -> low est
	//   "newer"  -> n ew e r (e w ranks before e r) -> n ew er
	//   " low"   -> Ġ low (no merge with Ġ)
	for _, c := range []struct {
		in   string
		want []int
	}{
		{"low", []int{259}}, {"lower", []int{267}}, {"newest", []int{262}}, {"widest", []int{265}},
		{"lowest", []int{259, 257}},
		{"newer", []int{asciiID('n'), 260, 266}},
		{" low", []int{220, 259}},
		{"low<|endoftext|>", []int{259, 268}},
	} {
		if got := tok.Encode(c.in); !reflect.DeepEqual(got, c.want) {
			t.Errorf("Encode(%q) = %v, want %v", c.in, got, c.want)
		}
	}

	// MinFrequency 3 stops before the merges seen only twice.
	tok, err = TrainBPE(texts, BPETrainOptions{VocabSize: 1000, MinFrequency: 3})
	if err != nil {
		t.Fatal(err)
	}
	if got := mergesOf(t, tok); !reflect.DeepEqual(got, want[:10]) {
		t.Errorf("MinFrequency 3: merges %q, want %q", got, want[:10])
	}
	// MinFrequency 7: "e w" (6) is not merged.
	tok, err = TrainBPE(texts, BPETrainOptions{VocabSize: 1000, MinFrequency: 7})
	if err != nil {
		t.Fatal(err)
	}
	if got := mergesOf(t, tok); !reflect.DeepEqual(got, want[:4]) {
		t.Errorf("MinFrequency 7: merges %q, want %q", got, want[:4])
	}
	// VocabSize bounds the number of merges.
	tok, err = TrainBPE(texts, BPETrainOptions{VocabSize: 256 + 5 + 1})
	if err != nil {
		t.Fatal(err)
	}
	if got := mergesOf(t, tok); !reflect.DeepEqual(got, want[:5]) || tok.VocabSize() != 262 || tok.EOT() != 261 {
		t.Errorf("VocabSize 262: merges %q vocab %d eot %d", got, tok.VocabSize(), tok.EOT())
	}
}

func TestTrainBPEOverlappingPairs(t *testing.T) {
	for _, c := range []struct {
		texts  []string
		minF   int
		merges []string
		seg    []string
	}{
		// (a, a) occurs twice per "aaa"; merging goes left to right: aa a.
		{[]string{"aaa", "aaa"}, 2, []string{"a a", "aa a"}, []string{"aaa"}},
		// "aaaa": (a, a) x3 -> aa aa -> aaaa.
		{[]string{"aaaa"}, 1, []string{"a a", "aa aa"}, []string{"aaaa"}},
		// "aaaaa" -> aa aa a; then (aa, aa) and (aa, a) tie at 1: "aa a" < "aa aa"
		// -> aa aaa; then aaaaa.
		{[]string{"aaaaa"}, 1, []string{"a a", "aa a", "aa aaa"}, []string{"aaaaa"}},
		// Pre-token boundaries: "a a" is "a" and " a" ("Ġa"); the only pair is (Ġ, a).
		{[]string{"a a a"}, 1, []string{"Ġ a"}, []string{"Ġa", "a"}},
	} {
		r, err := trainBPE(c.texts, BPETrainOptions{VocabSize: 300, MinFrequency: c.minF})
		if err != nil {
			t.Fatal(err)
		}
		if got := mergesOf(t, r.bpe); !reflect.DeepEqual(got, c.merges) {
			t.Errorf("%q: merges %q, want %q", c.texts, got, c.merges)
		}
		var segs []string
		for _, s := range r.segs {
			for _, id := range s {
				segs = append(segs, r.bpe.Token(id))
			}
		}
		if !reflect.DeepEqual(segs, c.seg) {
			t.Errorf("%q: segmentation %q, want %q", c.texts, segs, c.seg)
		}
	}
}

func TestTrainBPEGPT2ByteOrder(t *testing.T) {
	tok, err := TrainBPE(nil, BPETrainOptions{VocabSize: 257})
	if err != nil {
		t.Fatal(err)
	}
	if tok.VocabSize() != 257 || tok.EOT() != 256 || tok.Token(256) != EndOfText {
		t.Fatalf("empty corpus: vocab %d eot %d", tok.VocabSize(), tok.EOT())
	}
	// Known ids of GPT-2's vocab.json.
	for id, want := range map[int]string{0: "!", 1: `"`, 59: `\`, 93: "~", 94: "¡", 105: "¬", 106: "®", 187: "ÿ",
		188: "Ā", 198: "Ċ", 220: "Ġ", 221: "ġ", 255: "Ń"} {
		if got := tok.Token(id); got != want {
			t.Errorf("id %d is %q, want %q", id, got, want)
		}
	}
	// Every byte encodes to its own symbol's id, and the ids are a permutation.
	seen := map[int]bool{}
	for b := 0; b < 256; b++ {
		ids := tok.Encode(string([]byte{byte(b)}))
		if len(ids) != 1 || ids[0] < 0 || ids[0] > 255 || seen[ids[0]] {
			t.Fatalf("byte 0x%02x encodes to %v", b, ids)
		}
		seen[ids[0]] = true
	}
}

func TestTrainBPEOptionErrors(t *testing.T) {
	for _, c := range []struct {
		o     BPETrainOptions
		field string
	}{
		{BPETrainOptions{}, "VocabSize"},
		{BPETrainOptions{VocabSize: 256}, "VocabSize"},
		{BPETrainOptions{VocabSize: -1}, "VocabSize"},
		{BPETrainOptions{VocabSize: MaxTrainVocabSize + 1}, "VocabSize"},
		{BPETrainOptions{VocabSize: 1000, MinFrequency: -1}, "MinFrequency"},
	} {
		tok, err := TrainBPE([]string{"hello"}, c.o)
		if err == nil || tok != nil || !strings.Contains(err.Error(), c.field) {
			t.Errorf("%+v: got %v, %v; want an error naming %s", c.o, tok, err, c.field)
		}
	}
	if _, err := TrainBPE([]string{"hello"}, BPETrainOptions{VocabSize: MaxTrainVocabSize}); err != nil {
		t.Errorf("VocabSize %d: %v", MaxTrainVocabSize, err)
	}
}

// pretrainDocs returns documents of a few lines each from the reviews pre-training
// text, n lines in all.
func pretrainDocs(t testing.TB, n int) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "task", "reviews", "data", "pretrain.txt"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < n {
		t.Fatalf("pretrain.txt has %d lines, want %d", len(lines), n)
	}
	var docs []string
	for i := 0; i < n; i += 7 {
		docs = append(docs, strings.Join(lines[i:min(i+7, n)], "\n")+"\n")
	}
	return docs
}

// mixedDocs are texts with non-ASCII letters, digits, punctuation and whitespace runs,
// and random words over a three-letter alphabet (runs of repeated symbols, many
// competing ways to build the same string).
func mixedDocs() []string {
	rng := rand.New(rand.NewPCG(1, 2))
	docs := []string{
		"Café naïve façade — déjà vu, 12.50€ and 3,000,000 ¥!!",
		"日本語のテキストと中文文本。 Ελληνικά κείμενα, русский текст.",
		"emoji 🙂🙂 🚀 x\t\ttabs  \n\n\n  indented\r\n",
		"don't we'll they've I'M  'quoted' \"double\" <tag> a&b",
		"<|endoftext|>after eot<|endoftext|>",
	}
	for range 3 {
		docs = append(docs, docs...)
	}
	for range 300 {
		var sb strings.Builder
		for range 1 + rng.IntN(20) {
			for range 1 + rng.IntN(12) {
				sb.WriteByte("abc"[rng.IntN(3)])
			}
			sb.WriteByte(" \n"[rng.IntN(2)])
		}
		docs = append(docs, sb.String())
	}
	return docs
}

// checkAgreement trains on docs, writes and loads the files, and checks that the
// loaded encoder segments every training pre-token as the trainer did.
func checkAgreement(t *testing.T, docs []string, o BPETrainOptions) (*trainResult, *BPE) {
	t.Helper()
	r, err := trainBPE(docs, o)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := r.bpe.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadBPE(filepath.Join(dir, VocabFile), filepath.Join(dir, MergesFile))
	if err != nil {
		t.Fatal(err)
	}
	if loaded.VocabSize() != r.bpe.VocabSize() || loaded.EOT() != loaded.VocabSize()-1 || loaded.Token(loaded.EOT()) != EndOfText {
		t.Fatalf("loaded vocab %d eot %d, trained vocab %d", loaded.VocabSize(), loaded.EOT(), r.bpe.VocabSize())
	}
	if len(r.words) < 500 {
		t.Fatalf("only %d distinct pre-tokens", len(r.words))
	}
	index := map[string]int{}
	for w, word := range r.words {
		index[word] = w
		if got := loaded.encodePiece(word); !slices.Equal(got, r.segs[w]) {
			t.Errorf("pre-token %q: encoder %v, trainer %v", word, got, r.segs[w])
		}
		if got := r.bpe.encodePiece(word); !slices.Equal(got, r.segs[w]) {
			t.Errorf("pre-token %q: trained tokenizer %v, trainer %v", word, got, r.segs[w])
		}
	}
	// Whole documents through the public API: the trainer's segments of the pre-tokens.
	for _, d := range docs {
		var want []int
		for i, part := range strings.Split(d, EndOfText) {
			if i > 0 {
				want = append(want, loaded.EOT())
			}
			for _, p := range PreTokenize(part) {
				want = append(want, r.segs[index[p]]...)
			}
		}
		if got := loaded.Encode(d); !slices.Equal(got, want) {
			t.Fatalf("Encode(%q) = %v, want %v", d, got, want)
		}
		if got := loaded.Decode(want); got != d {
			t.Fatalf("Decode(Encode(%q)) = %q", d, got)
		}
	}
	// Writing the loaded tokenizer gives the same files.
	v1, m1, _ := r.bpe.marshalFiles()
	v2, m2, err := loaded.marshalFiles()
	if err != nil || !bytes.Equal(v1, v2) || !bytes.Equal(m1, m2) {
		t.Errorf("files of the loaded tokenizer differ (%v)", err)
	}
	return r, loaded
}

func TestTrainBPEEncoderAgreesPretrain(t *testing.T) {
	docs := pretrainDocs(t, 1500)
	r, loaded := checkAgreement(t, docs, BPETrainOptions{VocabSize: 2000})
	if loaded.VocabSize() != 2000 || loaded.EOT() != 1999 {
		t.Errorf("vocab %d eot %d, want 2000, 1999", loaded.VocabSize(), loaded.EOT())
	}
	t.Logf("%d distinct pre-tokens, %d duplicate pairs skipped", len(r.words), r.skipped)
	// The merges compress: English text needs well under one token per 2 bytes.
	text := strings.Join(docs, "")
	if n := len(loaded.Encode(text)); n*3 > len(text) {
		t.Errorf("%d tokens for %d bytes", n, len(text))
	}
}

func TestTrainBPEEncoderAgreesExhaustive(t *testing.T) {
	// MinFrequency 1 and a vocabulary too large to fill: merging goes on until every
	// pre-token is one symbol or its remaining pairs all make existing tokens.
	docs := append(pretrainDocs(t, 300), mixedDocs()...)
	r, loaded := checkAgreement(t, docs, BPETrainOptions{VocabSize: 1 << 16, MinFrequency: 1})
	if loaded.VocabSize() >= 1<<16 {
		t.Errorf("vocabulary filled up (%d); the corpus should run out of pairs", loaded.VocabSize())
	}
	// Training ran out of pairs: whatever is left unmerged in a pre-token are pairs whose
	// concatenation is already a token (refused as duplicates).
	for w, seg := range r.segs {
		for i := 0; i+1 < len(seg); i++ {
			if _, ok := loaded.vocab[loaded.Token(seg[i])+loaded.Token(seg[i+1])]; !ok {
				t.Fatalf("pre-token %q: pair (%q, %q) left unmerged", r.words[w], loaded.Token(seg[i]), loaded.Token(seg[i+1]))
			}
		}
	}
	t.Logf("%d distinct pre-tokens, %d merges, %d duplicate pairs skipped", len(r.words), loaded.VocabSize()-257, r.skipped)
}

func TestTrainBPERoundTrip(t *testing.T) {
	tok, err := TrainBPE(append(pretrainDocs(t, 700), mixedDocs()...), BPETrainOptions{VocabSize: 1500})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	pool := []rune("abcxyz ETAOIN0123456789 \t\n\r  .,;:!?'\"-_()[]{}<>/\\@#$%^&*~`|+=éüñßçøåÆ日本語中文한국어Ωπ😀🙂🚀\u00a0\u200b\u3000\u0301")
	cases := append([]string{}, edgeCases...)
	for range 300 {
		var sb strings.Builder
		for range rng.IntN(60) {
			sb.WriteRune(pool[rng.IntN(len(pool))])
		}
		cases = append(cases, sb.String())
	}
	cases = append(cases, strings.Join(pretrainDocs(t, 50), ""))
	for _, s := range cases {
		ids := tok.Encode(s)
		for _, id := range ids {
			if id < 0 || id >= tok.VocabSize() {
				t.Fatalf("%q: id %d outside the vocabulary", s, id)
			}
		}
		if got := tok.Decode(ids); got != s {
			t.Errorf("Decode(Encode(%q)) = %q", s, got)
		}
		if utf8.ValidString(s) && strings.Count(s, EndOfText) == 0 && len(ids) > len(s) {
			t.Errorf("%q: %d ids for %d bytes", s, len(ids), len(s))
		}
	}
}

func TestTrainBPEDeterministic(t *testing.T) {
	docs := append(pretrainDocs(t, 1000), mixedDocs()...)
	reversed := slices.Clone(docs)
	slices.Reverse(reversed)
	var vocab, merges [][]byte
	for _, d := range [][]string{docs, docs, reversed} {
		tok, err := TrainBPE(d, BPETrainOptions{VocabSize: 1200})
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		if err := tok.WriteFiles(dir); err != nil {
			t.Fatal(err)
		}
		v, err := os.ReadFile(filepath.Join(dir, VocabFile))
		if err != nil {
			t.Fatal(err)
		}
		m, err := os.ReadFile(filepath.Join(dir, MergesFile))
		if err != nil {
			t.Fatal(err)
		}
		vocab, merges = append(vocab, v), append(merges, m)
	}
	for i := 1; i < len(vocab); i++ {
		if !bytes.Equal(vocab[0], vocab[i]) || !bytes.Equal(merges[0], merges[i]) {
			t.Errorf("training %d wrote different files than training 0", i)
		}
	}
}

func TestWriteFilesFormat(t *testing.T) {
	tok, err := TrainBPE(mixedDocs(), BPETrainOptions{VocabSize: 400})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "new", "dir")
	if err := tok.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	vb, err := os.ReadFile(filepath.Join(dir, VocabFile))
	if err != nil {
		t.Fatal(err)
	}
	var vocab map[string]int
	if err := json.Unmarshal(vb, &vocab); err != nil {
		t.Fatal(err)
	}
	if len(vocab) != 400 || vocab[EndOfText] != 399 || vocab[`"`] != 1 || vocab[`\`] != 59 || vocab["Ġ"] != 220 {
		t.Errorf("vocab.json: %d entries, eot %d, quote %d, backslash %d", len(vocab), vocab[EndOfText], vocab[`"`], vocab[`\`])
	}
	// One entry per line in id order.
	lines := strings.Split(strings.TrimSuffix(string(vb), "\n"), "\n")
	if len(lines) != 402 || lines[0] != "{" || lines[401] != "}" {
		t.Fatalf("vocab.json has %d lines, first %q last %q", len(lines), lines[0], lines[len(lines)-1])
	}
	for id := 0; id < 400; id++ {
		var e map[string]int
		if err := json.Unmarshal([]byte("{"+strings.TrimSuffix(lines[id+1], ",")+"}"), &e); err != nil {
			t.Fatalf("line %d %q: %v", id+2, lines[id+1], err)
		}
		for k, v := range e {
			if v != id || tok.Token(id) != k {
				t.Errorf("line %d is %q, want id %d %q", id+2, lines[id+1], id, tok.Token(id))
			}
		}
	}
	mb, err := os.ReadFile(filepath.Join(dir, MergesFile))
	if err != nil {
		t.Fatal(err)
	}
	ml := strings.Split(string(mb), "\n")
	if ml[0] != "#version: 0.2" || len(ml) != 1+143+1 || ml[len(ml)-1] != "" {
		t.Fatalf("merges.txt: header %q, %d lines", ml[0], len(ml))
	}
	for i, m := range ml[1 : len(ml)-1] {
		l, r, ok := strings.Cut(m, " ")
		if !ok || vocab[l+r] != 256+i {
			t.Errorf("merge %d %q: result id %d", i, m, vocab[l+r])
		}
	}
}

// BenchmarkTrainBPE trains a 4096-token vocabulary on about 1 MB of English.
func BenchmarkTrainBPE(b *testing.B) {
	docs := pretrainDocs(b, 6993)
	var all []string
	size := 0
	for size < 1<<20 {
		for _, d := range docs {
			all = append(all, d)
			size += len(d)
		}
	}
	b.SetBytes(int64(size))
	for b.Loop() {
		if _, err := TrainBPE(all, BPETrainOptions{VocabSize: 4096}); err != nil {
			b.Fatal(err)
		}
	}
}
