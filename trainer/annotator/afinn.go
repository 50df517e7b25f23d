package annotator

import (
	_ "embed"
	"encoding/json"
	"math"
	"strings"
	"sync"
)

// afinn-165.json is languages/en/labels.json of npm sentiment@5.0.2, byte for byte: AFINN-165 by
// Finn Årup Nielsen, Open Database License v1.0 (see data/README.md and NOTICE).
//
//go:embed data/afinn-165.json
var afinnJSON []byte

// afinnAlpha normalises an AFINN sum x to x/sqrt(x^2+alpha). VADER uses alpha 15 on valences in
// [-4, 4]; AFINN valences lie in [-5, 5], so alpha = 15*(5/4)^2 ~ 25 puts one word of the same
// relative strength at about the same score.
const afinnAlpha = 25

// afinnNegators flip the sign of the entry that follows them (the rule of npm sentiment).
var afinnNegators = setOf(`not no never cant can't cannot dont don't doesnt doesn't didnt didn't
isnt isn't wasnt wasn't wont won't arent aren't non`)

type afinnLex struct {
	words   map[string]float64 // single-token entries
	phrases map[string]float64 // multi-token entries, tokens joined by one space
	maxLen  int                // longest phrase in tokens
}

var (
	afinnOnce sync.Once
	afinnData *afinnLex
)

func loadAFINN() *afinnLex {
	afinnOnce.Do(func() {
		var raw map[string]float64
		if err := json.Unmarshal(afinnJSON, &raw); err != nil {
			panic("annotator: embedded AFINN-165: " + err.Error())
		}
		l := &afinnLex{words: map[string]float64{}, phrases: map[string]float64{}, maxLen: 1}
		for k, v := range raw {
			toks := Words(k) // "well-developed" -> "well developed", as the scored text is split
			switch {
			case len(toks) == 0:
			case len(toks) == 1:
				l.words[toks[0]] = v
			default:
				l.phrases[strings.Join(toks, " ")] = v
				l.maxLen = max(l.maxLen, len(toks))
			}
		}
		afinnData = l
	})
	return afinnData
}

// NewHeldOut returns "afinn": AFINN-165 valences under the same guards as the gold annotator (see
// the package doc). It shares no word list or rule with VADER beyond the guards, but it is a
// lexicon of the same kind and orders most pairs of human text as VADER does; the held-out
// evaluator is NewClassifier. It stays for comparison and for callers that used it.
func NewHeldOut() *Guarded { return &Guarded{lex: afinnLexicon{loadAFINN()}} }

type afinnLexicon struct{ l *afinnLex }

func (afinnLexicon) name() string { return "afinn" }

func (a afinnLexicon) bearing(w string) bool {
	_, ok := a.l.words[w]
	return ok
}

// polarity sums the valences of the longest matching entries left to right; an entry right after a
// negator counts with the opposite sign.
func (a afinnLexicon) polarity(kept []string) float64 {
	x := 0.0
	for i := 0; i < len(kept); {
		v, span := 0.0, 1
		for n := min(a.l.maxLen, len(kept)-i); n >= 2; n-- {
			if pv, ok := a.l.phrases[strings.Join(kept[i:i+n], " ")]; ok {
				v, span = pv, n
				break
			}
		}
		if span == 1 {
			v = a.l.words[kept[i]]
		}
		if v != 0 && i > 0 {
			if _, neg := afinnNegators[kept[i-1]]; neg {
				v = -v
			}
		}
		x += v
		i += span
	}
	return x / math.Sqrt(x*x+afinnAlpha)
}
