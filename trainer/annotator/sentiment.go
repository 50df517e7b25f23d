package annotator

import (
	"strings"
	"sync"

	"github.com/jonreiter/govader"
)

var (
	vaderOnce sync.Once
	vader     *govader.SentimentIntensityAnalyzer
)

func vaderAnalyzer() *govader.SentimentIntensityAnalyzer {
	vaderOnce.Do(func() { vader = govader.NewSentimentIntensityAnalyzer() })
	return vader
}

// NewSentiment returns the gold annotator: VADER compound sentiment (github.com/jonreiter/govader)
// of the guarded continuation, see the package doc for the exact formula. VADER reads only the
// kept tokens joined by spaces, so punctuation emphasis ("great!!!!"), ALL-CAPS emphasis,
// emoticons and non-words earn nothing.
func NewSentiment() *Guarded { return &Guarded{lex: vaderLexicon{vaderAnalyzer()}} }

type vaderLexicon struct {
	sia *govader.SentimentIntensityAnalyzer
}

func (vaderLexicon) name() string { return "sentiment" }

func (v vaderLexicon) bearing(w string) bool {
	if _, ok := v.sia.Lexicon[w]; ok {
		return true
	}
	_, ok := v.sia.Constants.BoosterDict[w]
	return ok
}

func (v vaderLexicon) polarity(kept []string) float64 {
	return v.sia.PolarityScores(strings.Join(kept, " ")).Compound
}
