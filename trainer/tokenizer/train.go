package tokenizer

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// BPETrainOptions configures TrainBPE.
type BPETrainOptions struct {
	// VocabSize is the total number of ids wanted: the 256 byte symbols, one per merge,
	// and "<|endoftext|>". It must be in [257, MaxTrainVocabSize]. Training stops earlier
	// (a smaller vocabulary) when no pair is frequent enough.
	VocabSize int
	// MinFrequency is the least number of occurrences of a pair that is merged;
	// 0 means 2. It must not be negative.
	MinFrequency int
}

// MaxTrainVocabSize is the largest VocabSize TrainBPE accepts.
const MaxTrainVocabSize = 1 << 20

// TrainBPE learns a GPT-2 style byte-level BPE vocabulary from texts and returns the
// tokenizer, ready to Encode or to save with WriteFiles.
//
// Each text is a separate document, pre-tokenised exactly as Encode does (split on
// "<|endoftext|>", then GPT-2's pattern, see PreTokenize); merges never cross
// pre-token boundaries. Pre-tokens are counted once per distinct string with their
// multiplicity, their bytes mapped to GPT-2's printable symbols.
//
// Ids 0..255 are the byte symbols in GPT-2's order (that of its vocab.json: '!'..'~',
// '¡'..'¬', '®'..'ÿ', then bytes 0x00..0x20, 0x7F..0xA0, 0xAD as 'Ā', 'ā', ...), then one
// id per merge in merge order, then "<|endoftext|>" last.
//
// Each step merges the adjacent pair with the most occurrences, summed over the
// pre-tokens weighted by their counts (every adjacent position counts, so "a a a"
// holds two (a, a)); a merge replaces the non-overlapping occurrences left to right,
// as Encode does. Ties go to the pair whose left symbol, then right symbol, is the
// smallest string (byte-wise comparison of the symbols as written in merges.txt).
// As a safeguard, a pair whose concatenation is already a token (say "a bc" after
// "ab c"; not seen in practice) is never merged, so that every merge adds exactly one
// token and the encoder, applying merges by rank, reproduces the trainer's
// segmentation of every training pre-token. Training
// stops when the vocabulary is full or no remaining pair occurs MinFrequency times.
//
// The result depends only on the multiset of pre-tokens (not on the order of texts
// or of map iteration).
func TrainBPE(texts []string, o BPETrainOptions) (*BPE, error) {
	r, err := trainBPE(texts, o)
	if err != nil {
		return nil, err
	}
	return r.bpe, nil
}

// trainResult is TrainBPE's tokenizer plus what tests look at.
type trainResult struct {
	bpe     *BPE
	words   []string // distinct pre-tokens (raw bytes), sorted
	segs    [][]int  // final segmentation of each word (ids)
	skipped int      // pairs not merged because their concatenation was already a token
}

// pairStat is one adjacent pair (a, b) of symbol ids.
type pairStat struct {
	a, b  int32
	count int64
	words []int32 // words that held the pair when it was recorded (may be stale)
	done  bool    // merged, or refused as a duplicate token
}

// heapEntry is a pair's count when it was pushed; entries with a count different from
// the pair's current one are stale (counts of existing pairs only decrease).
type heapEntry struct {
	count int64
	pair  int32
}

type bpeTrainer struct {
	tok     []string         // id -> symbol
	ids     map[string]int32 // symbol -> id, plus "<|endoftext|>" (reserved)
	words   [][]int32        // word -> current symbols
	freq    []int64          // word -> number of occurrences
	pairs   map[uint64]int32 // (a<<32 | b) -> index in stats
	stats   []pairStat
	heap    []heapEntry
	minFreq int64
	touched []int32 // pairs created in the current merge step
	stamp   []int32 // pair -> step+1 when last added to touched
}

func pairKey(a, b int32) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

func trainBPE(texts []string, o BPETrainOptions) (*trainResult, error) {
	if o.VocabSize < 257 {
		return nil, fmt.Errorf("tokenizer: BPETrainOptions.VocabSize is %d, want at least 257 (256 byte tokens and %s)", o.VocabSize, EndOfText)
	}
	if o.VocabSize > MaxTrainVocabSize {
		return nil, fmt.Errorf("tokenizer: BPETrainOptions.VocabSize is %d, want at most %d", o.VocabSize, MaxTrainVocabSize)
	}
	if o.MinFrequency < 0 {
		return nil, fmt.Errorf("tokenizer: BPETrainOptions.MinFrequency is %d, want 0 (default 2) or more", o.MinFrequency)
	}
	minFreq := int64(o.MinFrequency)
	if minFreq == 0 {
		minFreq = 2
	}

	// Count pre-tokens exactly as Encode splits text.
	counts := map[string]int64{}
	for _, text := range texts {
		for _, part := range strings.Split(text, EndOfText) {
			for _, piece := range PreTokenize(part) {
				counts[piece]++
			}
		}
	}
	words := make([]string, 0, len(counts))
	for w := range counts {
		words = append(words, w)
	}
	sort.Strings(words)

	// Byte symbols: GPT-2's order is that of the mapped runes (printable bytes map to
	// themselves, the others to U+0100 upwards in byte order).
	byteEnc, byteDec := bytesToUnicode()
	runes := make([]rune, 0, 256)
	for _, r := range byteEnc {
		runes = append(runes, r)
	}
	slices.Sort(runes)
	var byteID [256]int32
	tr := &bpeTrainer{ids: map[string]int32{EndOfText: -1}, pairs: map[uint64]int32{}, minFreq: minFreq}
	for id, r := range runes {
		byteID[byteDec[r]] = int32(id)
		tr.tok = append(tr.tok, string(r))
		tr.ids[string(r)] = int32(id)
	}

	tr.words = make([][]int32, len(words))
	tr.freq = make([]int64, len(words))
	for w, s := range words {
		syms := make([]int32, len(s))
		for i := 0; i < len(s); i++ {
			syms[i] = byteID[s[i]]
		}
		tr.words[w], tr.freq[w] = syms, counts[s]
		for i := 0; i+1 < len(syms); i++ {
			p := tr.pair(syms[i], syms[i+1])
			st := &tr.stats[p]
			st.count += tr.freq[w]
			if n := len(st.words); n == 0 || st.words[n-1] != int32(w) {
				st.words = append(st.words, int32(w))
			}
		}
	}
	for p := range tr.stats {
		if tr.stats[p].count >= minFreq {
			tr.heap = append(tr.heap, heapEntry{tr.stats[p].count, int32(p)})
		}
	}
	for i := len(tr.heap)/2 - 1; i >= 0; i-- {
		tr.down(i)
	}

	res := &trainResult{words: words}
	var merges [][2]string
	for len(tr.tok)+1 < o.VocabSize && len(tr.heap) > 0 {
		e := tr.pop()
		st := &tr.stats[e.pair]
		if st.done {
			continue
		}
		if e.count != st.count {
			if st.count >= minFreq {
				tr.push(heapEntry{st.count, e.pair})
			}
			continue
		}
		st.done = true
		sym := tr.tok[st.a] + tr.tok[st.b]
		if _, ok := tr.ids[sym]; ok {
			res.skipped++
			continue
		}
		tr.merge(e.pair, sym, int32(len(merges)))
		merges = append(merges, [2]string{tr.tok[st.a], tr.tok[st.b]})
	}

	eot := len(tr.tok)
	t := &BPE{
		vocab:   make(map[string]int, eot+1),
		tokens:  append(tr.tok, EndOfText),
		ranks:   make(map[[2]string]int, len(merges)),
		eot:     eot,
		byteEnc: byteEnc,
		byteDec: byteDec,
		cache:   map[string][]int{},
	}
	for id, s := range t.tokens {
		t.vocab[s] = id
	}
	for r, m := range merges {
		t.ranks[m] = r
	}
	res.bpe = t
	res.segs = make([][]int, len(tr.words))
	for w, syms := range tr.words {
		seg := make([]int, len(syms))
		for i, s := range syms {
			seg[i] = int(s)
		}
		res.segs[w] = seg
	}
	return res, nil
}

// pair returns the index of (a, b) in stats, adding it if new.
func (tr *bpeTrainer) pair(a, b int32) int32 {
	k := pairKey(a, b)
	if p, ok := tr.pairs[k]; ok {
		return p
	}
	p := int32(len(tr.stats))
	tr.stats = append(tr.stats, pairStat{a: a, b: b})
	tr.stamp = append(tr.stamp, 0)
	tr.pairs[k] = p
	return p
}

// merge makes symbol sym from pair p in every word holding it and updates the pair
// counts: all pairs of an affected word are removed and those of the merged word added
// (net zero for pairs away from the merge sites). Only pairs with the new symbol are
// new; they record their words and go on the heap.
func (tr *bpeTrainer) merge(p int32, sym string, step int32) {
	a, b := tr.stats[p].a, tr.stats[p].b
	id := int32(len(tr.tok))
	tr.tok = append(tr.tok, sym)
	tr.ids[sym] = id
	tr.touched = tr.touched[:0]
	ws := tr.stats[p].words
	tr.stats[p].words = nil
	for _, w := range ws {
		syms := tr.words[w]
		found := false
		for i := 0; i+1 < len(syms); i++ {
			if syms[i] == a && syms[i+1] == b {
				found = true
				break
			}
		}
		if !found {
			continue
		}
		f := tr.freq[w]
		for i := 0; i+1 < len(syms); i++ {
			tr.stats[tr.pairs[pairKey(syms[i], syms[i+1])]].count -= f
		}
		out := syms[:0]
		for i := 0; i < len(syms); i++ {
			if i+1 < len(syms) && syms[i] == a && syms[i+1] == b {
				out = append(out, id)
				i++
			} else {
				out = append(out, syms[i])
			}
		}
		tr.words[w] = out
		for i := 0; i+1 < len(out); i++ {
			if out[i] != id && out[i+1] != id {
				tr.stats[tr.pairs[pairKey(out[i], out[i+1])]].count += f
				continue
			}
			q := tr.pair(out[i], out[i+1])
			st := &tr.stats[q]
			st.count += f
			if n := len(st.words); n == 0 || st.words[n-1] != w {
				st.words = append(st.words, w)
			}
			if tr.stamp[q] != step+1 {
				tr.stamp[q] = step + 1
				tr.touched = append(tr.touched, q)
			}
		}
	}
	for _, q := range tr.touched {
		if c := tr.stats[q].count; c >= tr.minFreq {
			tr.push(heapEntry{c, q})
		}
	}
}

// less orders the heap: higher count first, then smaller left symbol, then smaller
// right symbol.
func (tr *bpeTrainer) less(x, y heapEntry) bool {
	if x.count != y.count {
		return x.count > y.count
	}
	sx, sy := &tr.stats[x.pair], &tr.stats[y.pair]
	if l, r := tr.tok[sx.a], tr.tok[sy.a]; l != r {
		return l < r
	}
	return tr.tok[sx.b] < tr.tok[sy.b]
}

func (tr *bpeTrainer) push(e heapEntry) {
	tr.heap = append(tr.heap, e)
	for i := len(tr.heap) - 1; i > 0; {
		parent := (i - 1) / 2
		if !tr.less(tr.heap[i], tr.heap[parent]) {
			break
		}
		tr.heap[i], tr.heap[parent] = tr.heap[parent], tr.heap[i]
		i = parent
	}
}

func (tr *bpeTrainer) pop() heapEntry {
	top := tr.heap[0]
	n := len(tr.heap) - 1
	tr.heap[0] = tr.heap[n]
	tr.heap = tr.heap[:n]
	tr.down(0)
	return top
}

func (tr *bpeTrainer) down(i int) {
	n := len(tr.heap)
	for {
		m := i
		if l := 2*i + 1; l < n && tr.less(tr.heap[l], tr.heap[m]) {
			m = l
		}
		if r := 2*i + 2; r < n && tr.less(tr.heap[r], tr.heap[m]) {
			m = r
		}
		if m == i {
			return
		}
		tr.heap[i], tr.heap[m] = tr.heap[m], tr.heap[i]
		i = m
	}
}

// WriteFiles writes dir/vocab.json and dir/merges.txt (creating dir if needed) in
// GPT-2's formats: vocab.json is a JSON object of token -> id with one entry per line
// in id order (unused ids skipped), merges.txt is "#version: 0.2" then one "left right"
// line per merge in rank order. The output depends only on the tokenizer's contents.
func (t *BPE) WriteFiles(dir string) error {
	vocab, merges, err := t.marshalFiles()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, VocabFile), vocab, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, MergesFile), merges, 0o644)
}

func (t *BPE) marshalFiles() (vocab, merges []byte, err error) {
	var vb bytes.Buffer
	vb.WriteString("{")
	first := true
	for id, tok := range t.tokens {
		if tok == "" {
			continue
		}
		if !first {
			vb.WriteString(",")
		}
		first = false
		vb.WriteString("\n  ")
		appendJSONString(&vb, tok)
		vb.WriteString(": ")
		vb.WriteString(strconv.Itoa(id))
	}
	vb.WriteString("\n}\n")

	byRank := make([][2]string, len(t.ranks))
	for m, r := range t.ranks {
		if r < 0 || r >= len(byRank) || byRank[r][0] != "" {
			return nil, nil, errors.New("tokenizer: merge ranks are not 0..n-1")
		}
		byRank[r] = m
	}
	var mb bytes.Buffer
	mb.WriteString("#version: 0.2\n")
	for _, m := range byRank {
		mb.WriteString(m[0])
		mb.WriteByte(' ')
		mb.WriteString(m[1])
		mb.WriteByte('\n')
	}
	return vb.Bytes(), mb.Bytes(), nil
}

// appendJSONString writes s as a JSON string, escaping only what JSON requires
// (quote, backslash, control characters); invalid UTF-8 becomes U+FFFD.
func appendJSONString(b *bytes.Buffer, s string) {
	b.WriteByte('"')
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteByte(byte(r))
		case r < 0x20:
			fmt.Fprintf(b, `\u%04x`, r)
		case r == utf8.RuneError && size == 1:
			b.WriteString(`\ufffd`)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	b.WriteByte('"')
}
