// Package annotator provides the gold annotator that labels preference pairs ("sentiment": VADER)
// and a held-out evaluator it never saw ("afinn": AFINN-165), both wrapped in the same guards so
// that degenerate text cannot win.
//
// # What is scored
//
// Score(prompt, response) scores the response (the continuation) alone; the prompt is ignored.
// Both uses of the score compare two texts that share the prompt: the two samples of a preference
// pair, and the policy's continuation against the human continuation in evaluation. Scoring
// prompt+response would add the same prompt words to both sides, compress the difference through
// VADER's saturating normalisation, and hand free positive credit to an empty or degenerate
// continuation of a positive opening. The one thing lost is context that flips polarity across the
// boundary ("I did not" + " like it"): the reviews task therefore never uses an opening that
// contains a negation word (see hack/vendor-data.go).
//
// # The formula
//
// Let t = Words(response) (n tokens). If n = 0 the score is EmptyScore (-1). Otherwise:
//
//	known   tokens for which IsWord holds (words.txt or digits)
//	kept    the known tokens in order, except that a sentiment-bearing token (in the lexicon, or a
//	        VADER booster such as "very") is kept only at its first occurrence
//	m       number of distinct sentiment-bearing tokens in kept
//	s       polarity of kept joined by single spaces, in [-1, 1]:
//	          sentiment: VADER compound (lower-case, no punctuation: no "!!!" or ALL-CAPS boost)
//	          afinn:     x / sqrt(x^2 + 25), x = sum of AFINN-165 valences (longest phrase match,
//	                     sign flipped after a negator)
//	w  = |known| / n                                  word fraction
//	d1 = distinct / total over non-function tokens     (1 when there are none)
//	d2 = distinct / total word bigrams                 (1 when n < 2)
//	q  = w * d1 * d2                                  quality, 1 for ordinary fluent text
//	F  = clamp((distinct known tokens - 1) / 2, 0, 1)  fewer than 2 real words: no positive credit
//	G  = min(1, (f + 1) / (0.2 n + 1))                 f = function-word tokens; word salad: little
//	D  = min(1, (|kept| + 1) / (3 m))                  at most ~one sentiment word per 3 words
//	score = clamp(q*F*G*D*max(s, 0) + min(s, 0) - 0.5*(1 - q), -1, 1)
//
// The guards only ever shrink positive credit and only ever subtract: degeneracy cannot soften a
// negative score. Examples: "good good good good" has F = 0 and q = 1/12, so it scores
// -0.46 (below any fluent neutral sentence, which scores 0); "xq zzkv blorp" has w = 0 and scores
// -0.5; "good great nice excellent" has G = 0.56 and D = 0.42 and scores 0.21, far below
// "the food was good and the staff were friendly" (0.73).
//
// # Ties
//
// Scores are deterministic: equal responses give bit-identical scores, and different responses may
// tie too (e.g. two neutral sentences both score 0). The pipeline drops tied pairs; an evaluation
// win is a strictly higher score.
//
// Scorers are safe for concurrent use.
package annotator

import (
	"fmt"
	"math"
	"sort"
	"strings"
)

// Scorer scores a response to a prompt; higher is better.
type Scorer interface {
	Name() string
	Score(prompt, response string) float64
}

// EmptyScore is the score of a response with no word token at all (empty, whitespace or
// punctuation only).
const EmptyScore = -1.0

// Guard constants (see the package doc).
const (
	repetitionPenalty   = 0.5 // lambda in "- 0.5*(1 - q)"
	minFunctionFraction = 0.2 // G reaches 1 at this fraction of function-word tokens
	wordsPerSentiment   = 3   // D: at most one sentiment-bearing word per this many words
)

// Breakdown is the score with every factor of the formula, for diagnostics and tests.
type Breakdown struct {
	Tokens        int     // n
	Known         int     // |known|
	DistinctKnown int     // distinct known tokens
	Sentiment     int     // m: distinct sentiment-bearing tokens
	Polarity      float64 // s
	WordFrac      float64 // w
	Distinct1     float64 // d1
	Distinct2     float64 // d2
	Quality       float64 // q
	Fluency       float64 // F
	Function      float64 // G
	Density       float64 // D
	Score         float64
}

// lexicon is what distinguishes the two scorers.
type lexicon interface {
	name() string
	bearing(w string) bool          // sentiment-bearing (deduplicated, counted in m)
	polarity(kept []string) float64 // in [-1, 1]
}

// Guarded is a lexicon scorer wrapped in the degeneracy guards.
type Guarded struct{ lex lexicon }

// Name implements Scorer.
func (g *Guarded) Name() string { return g.lex.name() }

// Score implements Scorer; the prompt is ignored (see the package doc).
func (g *Guarded) Score(prompt, response string) float64 { return g.Breakdown(response).Score }

// Breakdown scores response and returns every factor.
func (g *Guarded) Breakdown(response string) Breakdown {
	toks := Words(response)
	b := Breakdown{Tokens: len(toks)}
	if len(toks) == 0 {
		b.Score = EmptyScore
		return b
	}
	knownDistinct := map[string]struct{}{}
	seenSent := map[string]struct{}{}
	kept := make([]string, 0, len(toks))
	function := 0
	contentTotal := 0
	content := map[string]struct{}{}
	for _, t := range toks {
		if IsFunctionWord(t) {
			function++
		} else {
			contentTotal++
			content[t] = struct{}{}
		}
		if !IsWord(t) {
			continue
		}
		b.Known++
		knownDistinct[t] = struct{}{}
		if g.lex.bearing(t) {
			if _, dup := seenSent[t]; dup {
				continue
			}
			seenSent[t] = struct{}{}
		}
		kept = append(kept, t)
	}
	b.DistinctKnown = len(knownDistinct)
	b.Sentiment = len(seenSent)

	n := float64(len(toks))
	b.WordFrac = float64(b.Known) / n
	b.Distinct1 = 1
	if contentTotal > 0 {
		b.Distinct1 = float64(len(content)) / float64(contentTotal)
	}
	b.Distinct2 = 1
	if len(toks) >= 2 {
		bigrams := map[[2]string]struct{}{}
		for i := 0; i+1 < len(toks); i++ {
			bigrams[[2]string{toks[i], toks[i+1]}] = struct{}{}
		}
		b.Distinct2 = float64(len(bigrams)) / float64(len(toks)-1)
	}
	b.Quality = b.WordFrac * b.Distinct1 * b.Distinct2
	b.Fluency = clamp(float64(b.DistinctKnown-1)/2, 0, 1)
	b.Function = math.Min(1, float64(function+1)/(minFunctionFraction*n+1))
	b.Density = 1
	if b.Sentiment > 0 {
		b.Density = math.Min(1, float64(len(kept)+1)/float64(wordsPerSentiment*b.Sentiment))
	}
	if len(kept) > 0 {
		b.Polarity = clamp(g.lex.polarity(kept), -1, 1)
	}
	pos := math.Max(b.Polarity, 0) * b.Quality * b.Fluency * b.Function * b.Density
	b.Score = clamp(pos+math.Min(b.Polarity, 0)-repetitionPenalty*(1-b.Quality), -1, 1)
	return b
}

func clamp(x, lo, hi float64) float64 {
	if x < lo {
		return lo
	}
	if x > hi {
		return hi
	}
	return x
}

var builtins = map[string]func() *Guarded{
	"sentiment": NewSentiment,
	"afinn":     NewHeldOut,
}

// Names lists the built-in scorers, sorted.
func Names() []string {
	names := make([]string, 0, len(builtins))
	for n := range builtins {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Builtin returns the named scorer: "sentiment" (the gold annotator) or "afinn" (held-out).
func Builtin(name string) (Scorer, error) {
	f, ok := builtins[name]
	if !ok {
		return nil, fmt.Errorf("unknown annotator %q (available: %s)", name, strings.Join(Names(), ", "))
	}
	return f(), nil
}
