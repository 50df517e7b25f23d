package annotator

import (
	"bytes"
	"cmp"
	"math"
	"strings"
	"testing"
	"time"
)

func trainingRows(t *testing.T) []LabelledText {
	t.Helper()
	var rows []LabelledText
	for _, r := range readJSONL[labelled](t, "../task/reviews/data/sft.jsonl") {
		if r.Label == nil {
			t.Fatalf("sft.jsonl row without label: %q", r.Text)
		}
		rows = append(rows, LabelledText{Text: r.Text, Label: *r.Label})
	}
	return rows
}

// The vendored weights are exactly what hack/classifier.go writes from the vendored training split
// with the current code (tokenisation, dictionary, features, solver).
func TestClassifierJSONIsFresh(t *testing.T) {
	rows := trainingRows(t)
	start := time.Now()
	got, err := TrainClassifier(rows)
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("trained on %d sentences in %v: %d bytes", len(rows), took, len(got))
	if !bytes.Equal(got, classifierJSON) {
		t.Errorf("data/classifier.json differs from a fresh training (%d bytes, fresh %d): run go run hack/classifier.go", len(classifierJSON), len(got))
	}
	if took > 2*time.Second {
		t.Errorf("training took %v, want < 2s", took)
	}
	if len(classifierJSON) > 300_000 {
		t.Errorf("classifier.json is %d bytes; keep it under 300 KB", len(classifierJSON))
	}
}

// Five-fold cross-validation on the training split (fold = row index mod 5), the measure that
// hack/classifier.go prints. Measured: accuracy 0.819, balanced 0.806.
func TestClassifierCrossValidation(t *testing.T) {
	if testing.Short() {
		t.Skip("five trainings")
	}
	rows := trainingRows(t)
	var right, total [2]int
	for k := 0; k < 5; k++ {
		var train, test []LabelledText
		for i, r := range rows {
			if i%5 == k {
				test = append(test, r)
			} else {
				train = append(train, r)
			}
		}
		m, err := trainClassifier(train)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range test {
			total[r.Label]++
			if (m.logit(knownWords(r.Text)) > 0) == (r.Label == 1) {
				right[r.Label]++
			}
		}
	}
	acc := float64(right[0]+right[1]) / float64(total[0]+total[1])
	bal := (float64(right[0])/float64(total[0]) + float64(right[1])/float64(total[1])) / 2
	t.Logf("5-fold accuracy %.3f, balanced %.3f", acc, bal)
	if acc < 0.78 || bal < 0.77 {
		t.Errorf("5-fold accuracy %.3f, balanced %.3f: want >= 0.78 and >= 0.77", acc, bal)
	}
}

// The held-out positive sentences (never trained on) are mostly classified positive, from the
// continuation alone and from the whole sentence. Measured: 0.70 and 0.79 (raw VADER compound
// above 0 on the continuations: see the log).
func TestClassifierHeldOutPositives(t *testing.T) {
	type example struct{ Prompt, Reference string }
	var exs []example
	for _, f := range []string{"validation", "eval"} {
		exs = append(exs, readJSONL[example](t, "../task/reviews/data/"+f+".jsonl")...)
	}
	sc, gold := NewClassifier(), NewSentiment()
	ref, full, scored, goldPos := 0, 0, 0, 0
	for _, e := range exs {
		b := sc.Breakdown(e.Reference)
		if b.Unguarded > 0 {
			ref++
		}
		if b.Score > 0 {
			scored++
		}
		if sc.Breakdown(e.Prompt+e.Reference).Unguarded > 0 {
			full++
		}
		if gold.Score("", e.Reference) > 0 {
			goldPos++
		}
	}
	n := float64(len(exs))
	t.Logf("%d held-out positives: classified positive %.3f (continuation), %.3f (whole sentence); guarded score > 0 %.3f; sentiment score > 0 %.3f",
		len(exs), float64(ref)/n, float64(full)/n, float64(scored)/n, float64(goldPos)/n)
	if float64(ref)/n < 0.65 || float64(full)/n < 0.75 {
		t.Errorf("held-out positives classified positive: %.3f of continuations (want >= 0.65), %.3f of sentences (want >= 0.75)",
			float64(ref)/n, float64(full)/n)
	}
}

// pairAgreement is the fraction of the pairs (2i, 2i+1) of xs that both scorers order strictly in
// which they order them the same way.
func pairAgreement(a, b Scorer, xs []string) (float64, int) {
	same, n := 0, 0
	for i := 0; i+1 < len(xs); i += 2 {
		a0, a1 := a.Score("", xs[i]), a.Score("", xs[i+1])
		b0, b1 := b.Score("", xs[i]), b.Score("", xs[i+1])
		if a0 == a1 || b0 == b1 {
			continue
		}
		n++
		if cmp.Compare(a0, a1) == cmp.Compare(b0, b1) {
			same++
		}
	}
	return float64(same) / float64(n), n
}

// The held-out evaluator must agree with gold on the whole (both judge sentiment) but be a
// different judge: clearly less often than a second lexicon does.
func TestClassifierIsAnotherJudge(t *testing.T) {
	sets := humanPairs(t)
	gold, cls, afinn := NewSentiment(), NewClassifier(), NewHeldOut()
	for _, name := range []string{"continuations", "references"} {
		c, nc := pairAgreement(gold, cls, sets[name])
		a, na := pairAgreement(gold, afinn, sets[name])
		t.Logf("%s: agreement with sentiment: classifier %.3f of %d pairs, afinn %.3f of %d", name, c, nc, a, na)
		if c < 0.6 || c > 0.85 || a-c < 0.08 {
			t.Errorf("%s: classifier agrees with sentiment on %.3f of pairs (afinn %.3f): want 0.6..0.85 and >= 0.08 below afinn", name, c, a)
		}
	}
}

func TestTrainClassifierErrors(t *testing.T) {
	for _, c := range []struct {
		rows []LabelledText
		want string
	}{
		{[]LabelledText{{"good", 1}, {"fine", 1}}, "both labels"},
		{[]LabelledText{{"good", 1}, {"bad", 2}}, "label 2"},
		{nil, "both labels"},
	} {
		if _, err := TrainClassifier(c.rows); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("TrainClassifier(%v) error %v, want it to mention %q", c.rows, err, c.want)
		}
	}
}

func TestNewClassifierFromJSON(t *testing.T) {
	good := `{"comment": "", "sentences": 2, "positive": 1, "lambda": 1, "bias": 0, "weights": {"great": 2, "bad": -2, "not great": -3}}`
	sc, err := NewClassifierFromJSON([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if sc.Name() != "classifier" {
		t.Errorf("name %q", sc.Name())
	}
	// Binary features: a repeated word counts once, a bigram adds its own weight.
	b := sc.Breakdown("the food was great great")
	if want := math.Tanh(1); b.Unguarded != want {
		t.Errorf("unguarded polarity %v, want tanh(2/2) = %v", b.Unguarded, want)
	}
	if got, want := sc.Breakdown("it was not great").Polarity, math.Tanh(-0.5); got != want {
		t.Errorf("polarity %v, want tanh((2-3)/2) = %v", got, want)
	}
	for _, bad := range []string{``, `{}`, `{"bias": 0, "weights": {"a": 1}, "extra": 1}`, `{"bias": "x", "weights": {}}`, `{"bias": 0, "weights": {"a": 1e999}}`} {
		if _, err := NewClassifierFromJSON([]byte(bad)); err == nil {
			t.Errorf("NewClassifierFromJSON(%s) accepted", bad)
		}
	}
}
