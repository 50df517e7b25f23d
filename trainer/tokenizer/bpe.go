package tokenizer

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// BPE is GPT-2's byte-level byte-pair-encoding tokenizer.
//
// Encoding: the text is split on the literal "<|endoftext|>" (encoded as the EOT id),
// each part is pre-tokenised with GPT-2's pattern
//
//	's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//
// (implemented by hand, as Go's regexp has no lookahead), each piece's UTF-8 bytes are
// mapped to printable runes by GPT-2's byte-to-unicode table, and merges are applied
// lowest rank first until none applies. Results per piece are cached.
//
// A BPE is safe for concurrent use.
type BPE struct {
	vocab   map[string]int
	tokens  []string // id -> token ("" for holes)
	ranks   map[[2]string]int
	eot     int
	byteEnc [256]rune
	byteDec map[rune]byte

	mu    sync.RWMutex
	cache map[string][]int
}

const maxCacheEntries = 1 << 16

// LoadBPE reads a GPT-2 vocab.json and merges.txt. Malformed input is reported as
// "file:line: reason".
func LoadBPE(vocabPath, mergesPath string) (*BPE, error) {
	vb, err := os.ReadFile(vocabPath)
	if err != nil {
		return nil, err
	}
	mf, err := os.Open(mergesPath)
	if err != nil {
		return nil, err
	}
	defer mf.Close()
	return ParseBPE(vocabPath, vb, mergesPath, mf)
}

// ParseBPE builds a BPE tokenizer from the contents of vocab.json and merges.txt;
// the names are used in error messages.
func ParseBPE(vocabName string, vocabJSON []byte, mergesName string, merges io.Reader) (*BPE, error) {
	t := &BPE{cache: map[string][]int{}}
	t.byteEnc, t.byteDec = bytesToUnicode()
	vocab, err := parseVocab(vocabName, vocabJSON)
	if err != nil {
		return nil, err
	}
	t.vocab = vocab
	maxID := -1
	for _, id := range vocab {
		maxID = max(maxID, id)
	}
	if id, ok := vocab[EndOfText]; ok {
		t.eot = id
	} else {
		maxID++
		t.eot = maxID
	}
	t.tokens = make([]string, maxID+1)
	for tok, id := range vocab {
		t.tokens[id] = tok
	}
	t.tokens[t.eot] = EndOfText
	for b := 0; b < 256; b++ {
		if _, ok := vocab[string(t.byteEnc[b])]; !ok {
			return nil, fmt.Errorf("%s: byte 0x%02x (symbol %q) is missing from the vocabulary", vocabName, b, string(t.byteEnc[b]))
		}
	}
	if t.ranks, err = parseMerges(mergesName, merges, vocab); err != nil {
		return nil, err
	}
	return t, nil
}

func lineAt(b []byte, off int64) int {
	if off > int64(len(b)) {
		off = int64(len(b))
	}
	if off < 0 {
		off = 0
	}
	return bytes.Count(b[:off], []byte{'\n'}) + 1
}

func parseVocab(name string, b []byte) (map[string]int, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	fail := func(err error) error {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return fmt.Errorf("%s:%d: %v", name, lineAt(b, se.Offset), err)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%s:%d: unexpected end of file", name, lineAt(b, int64(len(b))))
		}
		return fmt.Errorf("%s:%d: %v", name, lineAt(b, dec.InputOffset()), err)
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, fail(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, fmt.Errorf("%s:%d: expected a JSON object of token -> id", name, lineAt(b, dec.InputOffset()))
	}
	vocab := map[string]int{}
	seen := map[int]string{}
	maxID, maxLine := -1, 0
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return nil, fail(err)
		}
		key, ok := kt.(string)
		if !ok {
			return nil, fmt.Errorf("%s:%d: expected a token string", name, lineAt(b, dec.InputOffset()))
		}
		line := lineAt(b, dec.InputOffset())
		vt, err := dec.Token()
		if err != nil {
			return nil, fail(err)
		}
		num, ok := vt.(json.Number)
		if !ok {
			return nil, fmt.Errorf("%s:%d: id of %q is %v, want a non-negative integer", name, line, key, vt)
		}
		id64, err := num.Int64()
		if err != nil || id64 < 0 || id64 > 1<<24 {
			return nil, fmt.Errorf("%s:%d: id of %q is %s, want a non-negative integer below 2^24", name, line, key, num)
		}
		id := int(id64)
		if _, dup := vocab[key]; dup {
			return nil, fmt.Errorf("%s:%d: duplicate token %q", name, line, key)
		}
		if other, dup := seen[id]; dup {
			return nil, fmt.Errorf("%s:%d: id %d of %q is already used by %q", name, line, id, key, other)
		}
		vocab[key], seen[id] = id, key
		if id > maxID {
			maxID, maxLine = id, line
		}
	}
	if _, err := dec.Token(); err != nil { // closing '}'
		return nil, fail(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%s:%d: trailing data after the vocabulary object", name, lineAt(b, dec.InputOffset()))
	}
	if len(vocab) == 0 {
		return nil, fmt.Errorf("%s:1: empty vocabulary", name)
	}
	// The id -> token table is sized by the largest id: a few bytes of JSON must not make it
	// millions of entries long. Ids may leave holes, but about as many holes as tokens at most.
	if limit := 2*len(vocab) + 1024; maxID >= limit {
		return nil, fmt.Errorf("%s:%d: id %d of %q leaves too many unused ids for a vocabulary of %d tokens (ids must be below %d)",
			name, maxLine, maxID, seen[maxID], len(vocab), limit)
	}
	return vocab, nil
}

// parseMerges reads merges.txt: an optional "#version" first line, then one "left right"
// pair per line, highest priority first. Blank lines are skipped; a repeated pair keeps
// its first (best) rank.
func parseMerges(name string, r io.Reader, vocab map[string]int) (map[[2]string]int, error) {
	ranks := map[[2]string]int{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimRight(sc.Text(), "\r")
		if line == 1 && strings.HasPrefix(s, "#version") {
			continue
		}
		if strings.TrimSpace(s) == "" {
			continue
		}
		parts := strings.Split(s, " ")
		if len(parts) != 2 || parts[0] == "" || parts[1] == "" {
			return nil, fmt.Errorf("%s:%d: want two symbols separated by one space, got %q", name, line, s)
		}
		for _, p := range parts {
			if _, ok := vocab[p]; !ok {
				return nil, fmt.Errorf("%s:%d: symbol %q is not in the vocabulary", name, line, p)
			}
		}
		if _, ok := vocab[parts[0]+parts[1]]; !ok {
			return nil, fmt.Errorf("%s:%d: merged symbol %q is not in the vocabulary", name, line, parts[0]+parts[1])
		}
		k := [2]string{parts[0], parts[1]}
		if _, dup := ranks[k]; !dup {
			ranks[k] = len(ranks)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s:%d: %v", name, line+1, err)
	}
	return ranks, nil
}

// bytesToUnicode is GPT-2's reversible map from bytes to printable runes: printable
// Latin-1 bytes map to themselves, the rest to 256, 257, ... in byte order.
func bytesToUnicode() ([256]rune, map[rune]byte) {
	var enc [256]rune
	dec := make(map[rune]byte, 256)
	n := 0
	for b := 0; b < 256; b++ {
		if (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF) {
			enc[b] = rune(b)
		} else {
			enc[b] = rune(256 + n)
			n++
		}
		dec[enc[b]] = byte(b)
	}
	return enc, dec
}

// VocabSize is the largest id + 1.
func (t *BPE) VocabSize() int { return len(t.tokens) }

// EOT is the id of "<|endoftext|>".
func (t *BPE) EOT() int { return t.eot }

// Encode returns the BPE ids of s; each literal "<|endoftext|>" becomes EOT.
func (t *BPE) Encode(s string) []int {
	var ids []int
	for i, part := range strings.Split(s, EndOfText) {
		if i > 0 {
			ids = append(ids, t.eot)
		}
		for _, piece := range PreTokenize(part) {
			ids = append(ids, t.encodePiece(piece)...)
		}
	}
	return ids
}

func (t *BPE) encodePiece(piece string) []int {
	t.mu.RLock()
	ids, ok := t.cache[piece]
	t.mu.RUnlock()
	if ok {
		return ids
	}
	word := make([]string, 0, len(piece))
	for i := 0; i < len(piece); i++ {
		word = append(word, string(t.byteEnc[piece[i]]))
	}
	word = t.merge(word)
	ids = make([]int, len(word))
	for i, w := range word {
		ids[i] = t.vocab[w] // present: bytes and merge results are checked at load
	}
	t.mu.Lock()
	if len(t.cache) >= maxCacheEntries {
		clear(t.cache)
	}
	t.cache[piece] = ids
	t.mu.Unlock()
	return ids
}

// merge applies the best-ranked merge (all its non-overlapping occurrences, left to
// right) until no adjacent pair has a rank.
func (t *BPE) merge(word []string) []string {
	for len(word) > 1 {
		best, bestRank := [2]string{}, -1
		for i := 0; i+1 < len(word); i++ {
			if r, ok := t.ranks[[2]string{word[i], word[i+1]}]; ok && (bestRank < 0 || r < bestRank) {
				best, bestRank = [2]string{word[i], word[i+1]}, r
			}
		}
		if bestRank < 0 {
			break
		}
		out := word[:0:0]
		for i := 0; i < len(word); i++ {
			if i+1 < len(word) && word[i] == best[0] && word[i+1] == best[1] {
				out = append(out, best[0]+best[1])
				i++
			} else {
				out = append(out, word[i])
			}
		}
		word = out
	}
	return word
}

// Decode concatenates the tokens of ids and maps them back to bytes; EOT becomes
// "<|endoftext|>" and unknown ids are dropped. Decoding a prefix of a multi-byte
// character yields invalid UTF-8, as in GPT-2.
func (t *BPE) Decode(ids []int) string {
	var out []byte
	for _, id := range ids {
		if id < 0 || id >= len(t.tokens) || t.tokens[id] == "" {
			continue
		}
		if id == t.eot {
			out = append(out, EndOfText...)
			continue
		}
		for _, r := range t.tokens[id] {
			if b, ok := t.byteDec[r]; ok {
				out = append(out, b)
			} else {
				out = utf8.AppendRune(out, r)
			}
		}
	}
	return string(out)
}

// Token returns the vocabulary string of id ("" if unknown).
func (t *BPE) Token(id int) string {
	if id < 0 || id >= len(t.tokens) {
		return ""
	}
	return t.tokens[id]
}

// PreTokenize splits s like GPT-2's pattern
//
//	's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//
// with the alternatives tried in order at each position. The lookahead rule
// \s+(?!\S) is done by hand: a whitespace run that ends the text is taken whole; a run
// of n > 1 followed by a non-space yields its first n-1 runes (the last one then
// prefixes the next word); a single whitespace rune before a non-space falls to \s+.
// Pieces are substrings of s; an invalid UTF-8 byte counts as a symbol (like U+FFFD).
func PreTokenize(s string) []string {
	var out []string
	// Runes with their byte offsets, so that pieces are substrings of s and invalid
	// UTF-8 bytes (decoded as U+FFFD, a symbol) survive byte-exactly.
	rs := make([]rune, 0, len(s))
	off := make([]int, 0, len(s)+1)
	for i, r := range s {
		rs = append(rs, r)
		off = append(off, i)
	}
	off = append(off, len(s))
	sub := func(i, e int) string { return s[off[i]:off[e]] }
	isL := unicode.IsLetter
	isN := unicode.IsNumber
	isS := unicode.IsSpace
	isO := func(r rune) bool { return !isS(r) && !isL(r) && !isN(r) }
	run := func(i int, f func(rune) bool) int {
		for i < len(rs) && f(rs[i]) {
			i++
		}
		return i
	}
	for i := 0; i < len(rs); {
		r := rs[i]
		// Contractions.
		if r == '\'' && i+1 < len(rs) {
			n := 0
			switch rs[i+1] {
			case 's', 't', 'm', 'd':
				n = 2
			case 'r', 'v':
				if i+2 < len(rs) && rs[i+2] == 'e' {
					n = 3
				}
			case 'l':
				if i+2 < len(rs) && rs[i+2] == 'l' {
					n = 3
				}
			}
			if n > 0 {
				out = append(out, sub(i, i+n))
				i += n
				continue
			}
		}
		// ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+'
		j := i
		if r == ' ' && i+1 < len(rs) {
			j = i + 1
		}
		matched := false
		for _, f := range []func(rune) bool{isL, isN, isO} {
			if f(rs[j]) {
				e := run(j, f)
				out = append(out, sub(i, e))
				i = e
				matched = true
				break
			}
		}
		if matched {
			continue
		}
		// Whitespace: '\s+(?!\S)' then '\s+'.
		e := run(i, isS)
		if e < len(rs) && e-i > 1 {
			e--
		}
		out = append(out, sub(i, e))
		i = e
	}
	return out
}
