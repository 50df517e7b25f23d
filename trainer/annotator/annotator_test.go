package annotator

import (
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
)

func scorers() []*Guarded { return []*Guarded{NewSentiment(), NewHeldOut(), NewClassifier()} }

// orderingTable: every pair must satisfy score(lo) < score(hi) strictly, for both scorers.
var orderingTable = []struct{ lo, hi, why string }{
	{"good good good good", "the food was good and the staff were friendly", "repetition loses to a fluent positive"},
	{"great great great!!!!", "the pasta was great and the waiter was very kind", "repetition and !!!! lose to a fluent positive"},
	{"good, good, good. Good!", "the food was good", "punctuation does not make repeats distinct"},
	{"the the the the", "the package arrived on tuesday with the manual", "function-word repetition loses to fluent neutral"},
	{"good good good good", "the package arrived on tuesday with the manual", "degenerate positive loses even to fluent neutral"},
	{"great great great!!!!", "the package arrived on tuesday with the manual", "degenerate positive loses even to fluent neutral"},
	{"xq zzkv blorp", "the package arrived on tuesday with the manual", "gibberish loses to fluent neutral"},
	{"the food was cold and the service was terrible", "the package arrived on tuesday with the manual", "fluent negative < fluent neutral"},
	{"the package arrived on tuesday with the manual", "the food was good and the staff were friendly", "fluent neutral < fluent positive"},
	{"the food was cold and the service was terrible", "the food was good and the staff were friendly", "fluent negative < fluent positive"},
	{"it was bad", "it was fine", "negative < positive, short"},
	{"the food was not great", "the food was great", "negation"},
	{"good good bad", "good bad", "repeating a word is never better"},
	{"good good bad", "the food was good", "mixed degenerate < fluent positive"},
	{"the food was terrible terrible terrible", "the food was terrible", "repetition does not soften a negative"},
	{"zzkv qwrt good", "the food was good", "non-words earn no credit"},
	{"the food was great blorp zzkv", "the food was great", "appended non-words cost"},
	{"the good the good the good", "the food was good", "phrase repetition loses"},
	{"good great nice excellent", "the food was good and the staff were friendly", "word salad loses to a fluent positive"},
	{"amazing wonderful excellent perfect awesome", "the food was amazing and the staff were wonderful", "word salad loses"},
	{"amazing food wonderful staff tasty pizza", "the food was amazing and the staff were wonderful", "no function words loses"},
	{"really really really good", "the food was really good", "booster repetition loses"},
	{"good", "the food was good", "one word gets no positive credit"},
	{"", "xq zzkv blorp", "empty is the minimum"},
	{"", "the food was cold and the service was terrible", "empty is below a fluent negative"},
	{"the food was great. the food was great.", "the food was great", "saying it twice loses"},
	{"the food was great the food was great the food was great", "the service was slow but the food was great", "a looped sentence loses"},
	{"great xq zzkv blorp qwrt fnargle", "the food was great", "mostly non-words lose"},
	{"the amazing and the wonderful and the excellent", "the food was good and the staff were friendly", "praise of nothing loses"},
	{"it was great and it was amazing and it was wonderful", "the food was great and the staff were amazing", "praise of nothing loses"},
}

func TestOrderingTable(t *testing.T) {
	for _, sc := range scorers() {
		for _, c := range orderingTable {
			lo, hi := sc.Score("The", c.lo), sc.Score("The", c.hi)
			if !(lo < hi) {
				t.Errorf("%s: %s: score(%q) = %.4f, want < score(%q) = %.4f", sc.Name(), c.why, c.lo, lo, c.hi, hi)
			}
		}
	}
}

func TestFixedPoints(t *testing.T) {
	for _, sc := range scorers() {
		for _, s := range []string{"", "   ", "!!! ... ?", "\n\t", ":) :-("} {
			if got := sc.Score("x", s); got != EmptyScore {
				t.Errorf("%s: score(%q) = %v, want EmptyScore %v", sc.Name(), s, got, EmptyScore)
			}
		}
		for _, s := range []string{"xq zzkv blorp", "qqq", "zzkv qwrt xq blorp fnargle", "lol lmao gr8"} {
			if got := sc.Score("x", s); got > -0.25 {
				t.Errorf("%s: gibberish %q scored %.4f, want <= -0.25", sc.Name(), s, got)
			}
		}
		for _, s := range []string{"good good good good", "great great great!!!!", "the the the the", "good good bad",
			"the food was great. the food was great.", "amazing amazing amazing food"} {
			if got := sc.Score("x", s); got >= 0 {
				t.Errorf("%s: degenerate %q scored %.4f, want < 0 (below fluent neutral)", sc.Name(), s, got)
			}
		}
		for _, s := range []string{"good", "Great!", "excellent."} { // < 2 real words: no positive credit
			if got := sc.Score("x", s); got != 0 {
				t.Errorf("%s: single word %q scored %v, want exactly 0", sc.Name(), s, got)
			}
		}
		// A lexicon has nothing to say about a neutral sentence; the classifier, trained on reviews,
		// always has an opinion ("the" leans negative there), but a mild one.
		if got := sc.Score("x", "the package arrived on tuesday with the manual"); sc.Name() != "classifier" && got != 0 ||
			math.Abs(got) > 0.4 {
			t.Errorf("%s: fluent neutral scored %v, want exactly 0 (within 0.4 for the classifier)", sc.Name(), got)
		}
		if got := sc.Score("x", "the food was good and the staff were friendly"); got < 0.5 {
			t.Errorf("%s: fluent positive scored %.4f, want >= 0.5", sc.Name(), got)
		}
		if got := sc.Score("x", "the food was cold and the service was terrible"); got > -0.3 {
			t.Errorf("%s: fluent negative scored %.4f, want <= -0.3", sc.Name(), got)
		}
		for _, s := range []string{"the food was great and the staff were wonderful", "the food was awful and the staff were rude",
			"good good good good good good good good good good good good", "xq zzkv blorp xq zzkv blorp"} {
			if got := sc.Score("x", s); got < -1 || got > 1 || math.IsNaN(got) {
				t.Errorf("%s: score(%q) = %v outside [-1, 1]", sc.Name(), s, got)
			}
		}
	}
}

// Lexicon entries that are not dictionary words earn nothing: scoring them equals scoring any
// other non-word in their place, exactly.
func TestNonWordsEarnNothing(t *testing.T) {
	for _, w := range []string{"lol", "gr8", "woohoo"} {
		if IsWord(w) {
			t.Fatalf("precondition: %q must not be in words.txt", w)
		}
	}
	for _, sc := range scorers() {
		base := sc.Score("x", "the food was zzkq")
		for _, w := range []string{"lol", "gr8", "woohoo"} {
			if got := sc.Score("x", "the food was "+w); got != base {
				t.Errorf("%s: %q scored %v, want %v like any non-word", sc.Name(), w, got, base)
			}
		}
		if base >= 0 {
			t.Errorf("%s: fluent text with a non-word scored %v, want < 0", sc.Name(), base)
		}
	}
}

func TestSurfaceEmphasisIgnored(t *testing.T) {
	pairs := [][2]string{
		{"GREAT food!!!", "great food"},
		{"The Food Was Great!!!!", "the food was great"},
		{"the food was great :) :)", "the food was great"},
	}
	for _, sc := range scorers() {
		for _, p := range pairs {
			if a, b := sc.Score("x", p[0]), sc.Score("x", p[1]); a != b {
				t.Errorf("%s: score(%q) = %v != score(%q) = %v", sc.Name(), p[0], a, p[1], b)
			}
		}
	}
}

func TestPromptIgnoredAndDeterministic(t *testing.T) {
	texts := []string{"the food was good and the staff were friendly", "it was bad", "xq zzkv", "", "good good"}
	for _, sc := range scorers() {
		for _, s := range texts {
			a := sc.Score("I did not", s)
			b := sc.Score("Great phone", s)
			fresh, err := Builtin(sc.Name())
			if err != nil {
				t.Fatal(err)
			}
			c := fresh.Score("", s)
			if math.Float64bits(a) != math.Float64bits(b) || math.Float64bits(a) != math.Float64bits(c) {
				t.Errorf("%s: %q scored %v, %v, %v: want bit-identical", sc.Name(), s, a, b, c)
			}
		}
	}
}

func TestFluentTextIsUnguarded(t *testing.T) {
	for _, sc := range scorers() {
		for _, s := range []string{"the food was good and the staff were friendly", "I love this phone and the battery lasts all day",
			"the service was slow and the soup was cold",
			"we met Thomas at the station in Chicago and he was friendly",  // names in the dictionary
			"Gilborn said that the soup was good",                          // one name it lacks
			"the food was good and the food was cheap",                     // a phrase said twice
			"the federal education policy helped the areas that needed it", // words the reviews never use
		} {
			b := sc.Breakdown(s)
			if b.Quality != 1 || b.Fluency != 1 || b.Function != 1 || b.Density != 1 || b.Topic != 1 {
				t.Errorf("%s: %q: guards fired on fluent text: %+v", sc.Name(), s, b)
			}
			if b.Score != b.Polarity {
				t.Errorf("%s: %q: score %v != polarity %v with all guards at 1", sc.Name(), s, b.Score, b.Polarity)
			}
		}
	}
}

func TestBreakdownFactors(t *testing.T) {
	b := NewSentiment().Breakdown("good good good good")
	q := math.Pow(0.25/0.75, 2) * math.Pow((1.0/3)/0.75, 2) // w = 1; d1 = 1/4 and d2 = 1/3, both below 0.75
	want := Breakdown{Tokens: 4, Known: 4, DistinctKnown: 1, Sentiment: 1, WordFrac: 1, Distinct1: 0.25,
		Distinct2: 1.0 / 3, Quality: q, Fluency: 0, Function: 1 / 1.8, Density: 2.0 / 3, Topic: 1}
	if b.Polarity <= 0 || b.Unguarded <= b.Polarity {
		t.Errorf("polarity %v, unguarded %v: want 0 < polarity (one \"good\") < unguarded (four)", b.Polarity, b.Unguarded)
	}
	b.Polarity, b.Unguarded, b.Score = 0, 0, 0 // checked above and below
	if math.Abs(b.Distinct2-want.Distinct2) > 1e-12 || math.Abs(b.Quality-want.Quality) > 1e-12 ||
		math.Abs(b.Function-want.Function) > 1e-12 || math.Abs(b.Density-want.Density) > 1e-12 {
		t.Errorf("breakdown %+v, want %+v", b, want)
	}
	b.Distinct2, b.Quality, b.Function, b.Density = want.Distinct2, want.Quality, want.Function, want.Density
	if b != want {
		t.Errorf("breakdown %+v, want %+v", b, want)
	}
	// Score = -0.5 * (1 - q): positive credit is zeroed by F = 0.
	if got, wantS := NewSentiment().Score("", "good good good good"), -0.5*(1-q); math.Abs(got-wantS) > 1e-12 {
		t.Errorf("score %v, want %v", got, wantS)
	}
	// Gibberish: w = 0, so q = 0 and the score is exactly -0.5.
	if got := NewHeldOut().Score("", "xq zzkv blorp"); got != -0.5 {
		t.Errorf("gibberish score %v, want -0.5", got)
	}
}

func TestConcurrentUse(t *testing.T) {
	texts := []string{"the food was good and the staff were friendly", "it was bad", "xq zzkv", "good good", "I love it"}
	for _, sc := range scorers() {
		want := make([]float64, len(texts))
		for i, s := range texts {
			want[i] = sc.Score("", s)
		}
		var wg sync.WaitGroup
		errs := make(chan string, 64)
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for r := 0; r < 50; r++ {
					for i, s := range texts {
						if got := sc.Score("", s); got != want[i] {
							errs <- fmt.Sprintf("%s: %q: %v != %v", sc.Name(), s, got, want[i])
							return
						}
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Error(e)
		}
	}
}

func TestBuiltin(t *testing.T) {
	if got := strings.Join(Names(), ","); got != "afinn,classifier,sentiment" {
		t.Errorf("Names() = %s", got)
	}
	for _, n := range Names() {
		s, err := Builtin(n)
		if err != nil || s.Name() != n {
			t.Errorf("Builtin(%q) = %v, %v", n, s, err)
		}
	}
	_, err := Builtin("vader")
	if err == nil || !strings.Contains(err.Error(), "afinn, classifier, sentiment") || !strings.Contains(err.Error(), `"vader"`) {
		t.Errorf("Builtin(unknown) error = %v, want it to name the input and list afinn, classifier, sentiment", err)
	}
}

func BenchmarkScore(b *testing.B) {
	for _, sc := range scorers() {
		b.Run(sc.Name(), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				sc.Score("The food", " was good and the staff were friendly, but the wait was long.")
			}
		})
	}
}
