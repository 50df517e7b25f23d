package annotator

import (
	_ "embed"
	"strings"
	"sync"
)

// Words splits text into lower-case word tokens: maximal runs of ASCII letters, digits and
// apostrophes (U+2019 counts as an apostrophe), with apostrophes trimmed from both ends of a run.
// Every other byte (space, punctuation, hyphen, non-ASCII) separates words, so "well-made!!" is
// ["well", "made"] and "Don't" is ["don't"]. Both scorers, Distinct and the data vendoring
// program that builds words.txt (hack/vendor-data.go) use this tokenisation.
func Words(text string) []string {
	text = strings.ReplaceAll(text, "\u2019", "'")
	var out []string
	start := -1
	flush := func(end int) {
		if start >= 0 {
			if w := strings.Trim(strings.ToLower(text[start:end]), "'"); w != "" {
				out = append(out, w)
			}
			start = -1
		}
	}
	for i := 0; i < len(text); i++ {
		c := text[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '\'' {
			if start < 0 {
				start = i
			}
		} else {
			flush(i)
		}
	}
	flush(len(text))
	return out
}

// Distinct returns corpus-level distinct-n over texts: the number of unique word n-grams divided by
// the total number of word n-grams, where n-grams are taken within each text (never across two
// texts) over Words(text). It is 0 when there is no n-gram at all (or n < 1), and 1 when no n-gram
// repeats.
func Distinct(texts []string, n int) float64 {
	if n < 1 {
		return 0
	}
	seen := map[string]struct{}{}
	total := 0
	for _, t := range texts {
		ws := Words(t)
		for i := 0; i+n <= len(ws); i++ {
			seen[strings.Join(ws[i:i+n], " ")] = struct{}{}
			total++
		}
	}
	if total == 0 {
		return 0
	}
	return float64(len(seen)) / float64(total)
}

//go:embed data/words.txt
var wordsTxt string

var (
	knownOnce sync.Once
	knownSet  map[string]struct{}
)

// IsWord reports whether w (a token as returned by Words) counts as a real word: it is in the
// vendored word list data/words.txt (Debian wamerican entries that occur in the task's corpora or
// in the VADER/AFINN lexicons, lower-cased; single letters other than "a" and "i" excluded), or it
// is a number (digits only).
func IsWord(w string) bool {
	knownOnce.Do(func() {
		lines := strings.Split(wordsTxt, "\n")
		knownSet = make(map[string]struct{}, len(lines))
		for _, l := range lines {
			if l != "" {
				knownSet[l] = struct{}{}
			}
		}
	})
	if w == "" {
		return false
	}
	if _, ok := knownSet[w]; ok {
		return true
	}
	for i := 0; i < len(w); i++ {
		if w[i] < '0' || w[i] > '9' {
			return false
		}
	}
	return true
}

// functionWords is a closed-class list (articles, pronouns, prepositions, conjunctions,
// auxiliaries and modals, negation particles). Fluent English is roughly 40-50% function words by
// token; a string of content or sentiment words ("great amazing wonderful") has none.
var functionWords = setOf(`a an the this that these those some any each every all both either
neither no not nor and or but if then than so because as while when where which who whom whose
what why how there here i me my mine we us our ours you your yours he him his she her hers it its
they them their theirs myself yourself himself herself itself ourselves themselves one
of in on at to for from with without by about into onto over under after before between through
during against among up down out off upon within
is am are was were be been being do does did done have has had having will would shall should
can could may might must
isn't aren't wasn't weren't don't doesn't didn't haven't hasn't hadn't won't wouldn't can't
couldn't shouldn't mustn't i'm i've i'd i'll you're you've you'd you'll he's she's it's we're
we've we'd we'll they're they've they'd they'll that's there's what's let's`)

// IsFunctionWord reports whether w is in the package's closed-class function-word list.
func IsFunctionWord(w string) bool {
	_, ok := functionWords[w]
	return ok
}

func setOf(s string) map[string]struct{} {
	m := map[string]struct{}{}
	for _, w := range strings.Fields(s) {
		m[w] = struct{}{}
	}
	return m
}
