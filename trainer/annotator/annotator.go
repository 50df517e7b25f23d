// Package annotator provides the gold annotator that labels preference pairs ("sentiment": VADER)
// and held-out evaluators it never saw: "classifier" (a logistic regression trained on labelled
// human sentences) and "afinn" (AFINN-165), all wrapped in the same guards so that degenerate text
// cannot win.
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
//	known   tokens for which IsWord holds (a dictionary word or a number)
//	kept    the known tokens in order, except that a sentiment-bearing token is kept only at its
//	        first occurrence
//	m       number of distinct sentiment-bearing tokens in kept
//	s       polarity of kept, in [-1, 1]:
//	          sentiment:  VADER compound of kept joined by single spaces (lower-case, no
//	                      punctuation: no "!!!" or ALL-CAPS boost); bearing: in the VADER
//	                      lexicon, or a booster such as "very"
//	          classifier: 2 P(positive) - 1 = tanh(z/2), z = bias + the weights of the distinct
//	                      unigrams and bigrams of kept (see TrainClassifier); bearing: a unigram
//	                      weight of at least 1 in absolute value ("great", "bad", "not")
//	          afinn:      x / sqrt(x^2 + 25), x = sum of AFINN-165 valences (longest phrase match,
//	                      sign flipped after a negator); bearing: in AFINN-165
//	w  = |known| / n                                  word fraction
//	d1 = distinct / total over non-function tokens     (1 when there are none)
//	d2 = distinct / total word bigrams                 (1 when n < 2)
//	q  = h(w, 0.8) * h(d1, 0.75) * h(d2, 0.75)        quality; h(x, c) = min(1, x/c)^2
//	F  = clamp((distinct known tokens - 1) / 2, 0, 1)  fewer than 2 real words: no positive credit
//	G  = min(1, (f + 1) / (0.2 n + 1))                 f = function-word tokens; word salad: little
//	D  = min(1, (|kept| + 1) / (3 m))                  at most ~one sentiment word per 3 words
//	T  = min(1, (c + 1) / m)                           c = distinct kept tokens that are neither
//	                                                  function words nor sentiment-bearing: praise
//	                                                  must be about something ("food", "staff")
//	                                                  (D and T are 1 when m = 0)
//	score = clamp(q*F*G*D*T*max(s, 0) + min(s, 0) - 0.5*(1 - q), -1, 1)
//
// The guards only ever shrink positive credit and only ever subtract: degeneracy cannot soften a
// negative score. The thresholds of q leave ordinary fluent text alone, which may hold a name the
// dictionary lacks (one unknown token in five) or say a word or a phrase twice; below them the
// cost grows quadratically. Examples (sentiment): "good good good good" has F = 0 and q = 0.02, so
// it scores -0.49 (below any fluent neutral sentence, which scores 0); "the food was great. the
// food was great." has q = 0.26 and scores -0.21; "xq zzkv blorp" has w = 0 and scores -0.5;
// "good great nice excellent" has G = 0.56, D = 0.42 and T = 0.25 and scores 0.05, and "the amazing
// and the wonderful and the excellent" has T = 0.33 and scores 0.30, far below "the food was good
// and the staff were friendly" (0.73).
//
// # When the guards decide
//
// The guards are there for degenerate text; on fluent text they should almost never decide which
// of two responses wins. GuardDecided(s, a, b) reports whether they did: the scores order a and b
// differently from their unguarded polarities (Breakdown.Unguarded: s's polarity of all n tokens,
// nothing dropped or deduplicated; a tie broken by the guards counts). The pipeline can report the
// fraction of its pairs the guards decided: on broken, degenerate model text it is high by design.
// On pairs of human sentences (TestGuardRarelyDecidesOnHumanText) it is at most a few per cent;
// data/README.md has the measurements.
//
// # The evaluators
//
// "sentiment" is the gold annotator: it labels the preference pairs and scores the win rate.
// "classifier" is the held-out evaluator: a model of another family (weights fitted to the UCI
// training sentences, not a hand-made lexicon), so a policy that exploits VADER in particular
// shows up as a gap between the two. "afinn" is a lexicon like VADER: it agrees with gold on most
// pairs of human text, so it is no independent check; it is kept for comparison.
//
// # Ties
//
// Scores are deterministic: equal responses give bit-identical scores, and different responses may
// tie too (e.g. two neutral sentences both score 0 under sentiment). The pipeline drops tied pairs;
// an evaluation win is a strictly higher score.
//
// # Remote annotators
//
// BatchScorer is the interface of annotators that may fail: Batch wraps a built-in one, and
// three speak to a service over HTTP. HTTP speaks this package's own JSON protocol; RewardModel
// a reward model served by OpenRLHF (POST /get_reward) or vLLM (POST /pooling), scoring
// prompt+response; OpenAIJudge asks an LLM behind any OpenAI-compatible chat-completions API
// which of two responses is better, in both orders (its doc has the rules: position swap, ties,
// invalid answers, structured output, the verdict cache). All three share one retrying client
// (Retry: jittered exponential backoff, Retry-After, per-attempt timeout), Limits (concurrency,
// requests and tokens per minute, a budget that fails with ErrBudgetExceeded), Accounting, and a
// bearer token that never appears in an error. Package annotatortest serves all three protocols
// with a deterministic rule and injectable faults, for tests.
//
// Scorers are safe for concurrent use.
package annotator

import (
	"cmp"
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
	freeWordFrac        = 0.8  // q: w at or above this costs nothing
	freeDistinct1       = 0.75 // q: d1 at or above this costs nothing
	freeDistinct2       = 0.75 // q: d2 at or above this costs nothing
	repetitionPenalty   = 0.5  // lambda in "- 0.5*(1 - q)"
	minFunctionFraction = 0.2  // G reaches 1 at this fraction of function-word tokens
	wordsPerSentiment   = 3    // D: at most one sentiment-bearing word per this many words
)

// Breakdown is the score with every factor of the formula, for diagnostics and tests.
type Breakdown struct {
	Tokens        int     // n
	Known         int     // |known|
	DistinctKnown int     // distinct known tokens
	Sentiment     int     // m: distinct sentiment-bearing tokens
	Polarity      float64 // s
	Unguarded     float64 // the polarity of all n tokens, before any guard (0 when n = 0)
	WordFrac      float64 // w
	Distinct1     float64 // d1
	Distinct2     float64 // d2
	Quality       float64 // q
	Fluency       float64 // F
	Function      float64 // G
	Density       float64 // D
	Topic         float64 // T
	Score         float64
}

// lexicon is what distinguishes the scorers.
type lexicon interface {
	name() string
	bearing(w string) bool          // sentiment-bearing (deduplicated, counted in m)
	polarity(kept []string) float64 // in [-1, 1]
}

// Guarded is a polarity (a lexicon or the classifier) wrapped in the degeneracy guards.
type Guarded struct{ lex lexicon }

// Name implements Scorer.
func (g *Guarded) Name() string { return g.lex.name() }

// Score implements Scorer; the prompt is ignored (see the package doc).
func (g *Guarded) Score(prompt, response string) float64 {
	return g.breakdown(response, false).Score
}

// Breakdown scores response and returns every factor.
func (g *Guarded) Breakdown(response string) Breakdown { return g.breakdown(response, true) }

// breakdown computes Unguarded only when asked: Score does not need it.
func (g *Guarded) breakdown(response string, unguarded bool) Breakdown {
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
	b.Quality = shortfall(b.WordFrac, freeWordFrac) * shortfall(b.Distinct1, freeDistinct1) *
		shortfall(b.Distinct2, freeDistinct2)
	b.Fluency = clamp(float64(b.DistinctKnown-1)/2, 0, 1)
	b.Function = math.Min(1, float64(function+1)/(minFunctionFraction*n+1))
	b.Density, b.Topic = 1, 1
	if b.Sentiment > 0 {
		b.Density = math.Min(1, float64(len(kept)+1)/float64(wordsPerSentiment*b.Sentiment))
		topic := map[string]struct{}{}
		for _, t := range kept {
			if !IsFunctionWord(t) && !g.lex.bearing(t) {
				topic[t] = struct{}{}
			}
		}
		b.Topic = math.Min(1, float64(len(topic)+1)/float64(b.Sentiment))
	}
	if len(kept) > 0 {
		b.Polarity = clamp(g.lex.polarity(kept), -1, 1)
	}
	if unguarded {
		if len(kept) == len(toks) { // nothing dropped: kept is toks
			b.Unguarded = b.Polarity
		} else {
			b.Unguarded = clamp(g.lex.polarity(toks), -1, 1)
		}
	}
	pos := math.Max(b.Polarity, 0) * b.Quality * b.Fluency * b.Function * b.Density * b.Topic
	b.Score = clamp(pos+math.Min(b.Polarity, 0)-repetitionPenalty*(1-b.Quality), -1, 1)
	return b
}

// GuardDecided reports whether the guards decided the pair (a, b): s's scores order a and b
// differently from their unguarded polarities (Breakdown.Unguarded), including when exactly one
// of the two comparisons is a tie.
func GuardDecided(s *Guarded, a, b string) bool {
	ba, bb := s.Breakdown(a), s.Breakdown(b)
	return cmp.Compare(ba.Score, bb.Score) != cmp.Compare(ba.Unguarded, bb.Unguarded)
}

// shortfall is 1 for x >= free and falls as (x/free)^2 below it.
func shortfall(x, free float64) float64 {
	if x >= free {
		return 1
	}
	r := x / free
	return r * r
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
	"sentiment":  NewSentiment,
	"afinn":      NewHeldOut,
	"classifier": NewClassifier,
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

// Builtin returns the named scorer: "sentiment" (the gold annotator), "classifier" (the held-out
// evaluator) or "afinn" (a held-out lexicon, kept for comparison).
func Builtin(name string) (Scorer, error) {
	f, ok := builtins[name]
	if !ok {
		return nil, fmt.Errorf("unknown annotator %q (available: %s)", name, strings.Join(Names(), ", "))
	}
	return f(), nil
}
