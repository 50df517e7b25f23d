package annotator

import (
	"crypto/sha256"
	"encoding/hex"
	"math"
	"reflect"
	"sort"
	"strings"
	"testing"
)

func TestWords(t *testing.T) {
	cases := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"  ...!!! ", nil},
		{"The food was GOOD!", []string{"the", "food", "was", "good"}},
		{"Don't stop", []string{"don't", "stop"}},
		{"Don\u2019t stop", []string{"don't", "stop"}},
		{"'quoted' words''", []string{"quoted", "words"}},
		{"well-made, 10/10", []string{"well", "made", "10", "10"}},
		{"caf\u00e9 na\u00efve", []string{"caf", "na", "ve"}},
		{"a\tb\nc", []string{"a", "b", "c"}},
		{"it's 90's", []string{"it's", "90's"}},
	}
	for _, c := range cases {
		if got := Words(c.in); !reflect.DeepEqual(got, c.want) {
			t.Errorf("Words(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestDistinct(t *testing.T) {
	cases := []struct {
		texts []string
		n     int
		want  float64
	}{
		{nil, 1, 0},
		{[]string{""}, 2, 0},
		{[]string{"good"}, 2, 0}, // no bigram at all
		{[]string{"good good good good"}, 1, 0.25},
		{[]string{"good good good good"}, 2, 1.0 / 3},
		{[]string{"the cat sat", "the dog sat"}, 1, 4.0 / 6},
		{[]string{"the cat sat", "the dog sat"}, 2, 1},
		{[]string{"a b", "b c"}, 2, 1}, // no n-gram spans two texts
		{[]string{"a b", "a b"}, 2, 0.5},
		{[]string{"A b!", "a, B"}, 2, 0.5}, // over Words: case and punctuation ignored
		{[]string{"a b c"}, 3, 1},
		{[]string{"a b c"}, 4, 0},
		{[]string{"a b c"}, 0, 0},
	}
	for _, c := range cases {
		if got := Distinct(c.texts, c.n); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("Distinct(%q, %d) = %v, want %v", c.texts, c.n, got, c.want)
		}
	}
}

func TestIsWord(t *testing.T) {
	for w, want := range map[string]bool{
		"good": true, "the": true, "friendly": true, "don't": true, "a": true, "i": true, "123": true,
		"b": false, "x": false, "xq": false, "zzkv": false, "blorp": false, "": false, "h500": false, "Good": false,
		// In the dictionary but not in the reviews corpora (so not in words.txt).
		"education": true, "policy": true, "areas": true, "thomas": true, "chicago": true,
		"must've": true, "it'll": true, "doctor's": true, "b's": false, "'s": false,
		// Short names and acronyms only count when the corpora use them: "Th" (thorium), "Fo".
		"tv": true, "dvd": true, "fo": false, "wa": false, "ou": false,
	} {
		if got := IsWord(w); got != want {
			t.Errorf("IsWord(%q) = %v, want %v", w, got, want)
		}
	}
}

// The dictionary is Debian wamerican's american-english, unmodified (the hash of the file in the
// package, as in data/README.md).
func TestDictionary(t *testing.T) {
	raw := gunzip(dictGz)
	sum := sha256.Sum256(raw)
	if got, want := hex.EncodeToString(sum[:]), "9f513f1ceadb6a01c5485b7dbdfd5118dc66cd70b59cae2851292112d4066a32"; got != want {
		t.Errorf("data/american-english.gz holds a file with sha256 %s, want %s (wamerican 2020.12.07-2)", got, want)
	}
	if len(dictGz) > 300_000 {
		t.Errorf("american-english.gz is %d bytes; keep it under 300 KB", len(dictGz))
	}
	dict := map[string]bool{}
	for _, e := range strings.Split(string(raw), "\n") {
		dict[strings.ToLower(e)] = true
	}
	for _, w := range strings.Split(strings.TrimSuffix(wordsTxt, "\n"), "\n") {
		if !dict[w] {
			t.Errorf("words.txt word %q is not a dictionary entry", w)
		}
	}
}

// Random letter strings must rarely be words, or gibberish would pass the word-fraction guard.
// Measured: 142 of 676 two-letter strings (words.txt alone: 74), 713 of 17,576 three-letter ones
// (353).
func TestFewLetterStringsAreWords(t *testing.T) {
	two, three := 0, 0
	for a := 'a'; a <= 'z'; a++ {
		for b := 'a'; b <= 'z'; b++ {
			if IsWord(string([]rune{a, b})) {
				two++
			}
			for c := 'a'; c <= 'z'; c++ {
				if IsWord(string([]rune{a, b, c})) {
					three++
				}
			}
		}
	}
	if f2, f3 := float64(two)/676, float64(three)/17576; f2 > 0.25 || f3 > 0.05 {
		t.Errorf("%.3f of two-letter and %.3f of three-letter strings are words, want <= 0.25 and <= 0.05", f2, f3)
	}
}

func TestWordList(t *testing.T) {
	if len(wordsTxt) > 200_000 {
		t.Errorf("words.txt is %d bytes; keep it under 200 KB", len(wordsTxt))
	}
	lines := strings.Split(strings.TrimSuffix(wordsTxt, "\n"), "\n")
	if len(lines) < 5000 {
		t.Fatalf("words.txt has %d words", len(lines))
	}
	if !sort.StringsAreSorted(lines) {
		t.Error("words.txt is not sorted")
	}
	for i, w := range lines {
		if i > 0 && lines[i-1] == w {
			t.Errorf("duplicate word %q", w)
		}
		if got := Words(w); len(got) != 1 || got[0] != w {
			t.Errorf("word %q is not a single lower-case token (%q)", w, got)
		}
		if len(w) == 1 && w != "a" && w != "i" {
			t.Errorf("single letter %q in words.txt", w)
		}
	}
}
