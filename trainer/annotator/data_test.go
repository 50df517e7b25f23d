package annotator

import (
	"bufio"
	"encoding/json"
	"math"
	"os"
	"sort"
	"testing"
)

// These tests check the scorers against the vendored reviews data (read from the task folder by
// path, to keep this package free of a dependency on trainer/task).

type labelled struct {
	Text  string `json:"text"`
	Label *int   `json:"label"`
}

func readJSONL[T any](t *testing.T, path string) []T {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []T
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var v T
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

func auc(pos, neg []float64) float64 {
	s := 0.0
	for _, a := range pos {
		for _, b := range neg {
			switch {
			case a > b:
				s++
			case a == b:
				s += 0.5
			}
		}
	}
	return s / float64(len(pos)*len(neg))
}

// The guards must not stop the scorers from being sentiment judges: on the labelled training
// sentences (UCI 0/1 labels) positive ones must outscore negative ones. Measured at vendoring:
// sentiment 0.876 and afinn 0.863 on these 2,424 sentences (0.885 and 0.869 on all 2,964 UCI
// sentences, where raw VADER compound on the raw text gets 0.897). The classifier was trained on
// these sentences, so its AUC here is optimistic (TestClassifierCrossValidation is the fair one).
func TestSeparatesLabelledReviews(t *testing.T) {
	rows := readJSONL[labelled](t, "../task/reviews/data/sft.jsonl")
	for _, c := range []struct {
		sc  *Guarded
		min float64
	}{{NewSentiment(), 0.86}, {NewHeldOut(), 0.84}, {NewClassifier(), 0.9}} {
		var pos, neg []float64
		for _, r := range rows {
			if r.Label == nil {
				t.Fatalf("sft.jsonl row without label: %q", r.Text)
			}
			if *r.Label == 1 {
				pos = append(pos, c.sc.Score("", r.Text))
			} else {
				neg = append(neg, c.sc.Score("", r.Text))
			}
		}
		if a := auc(pos, neg); a < c.min {
			t.Errorf("%s: AUC(positive vs negative) = %.3f, want >= %.2f", c.sc.Name(), a, c.min)
		} else {
			t.Logf("%s: AUC %.3f over %d positive, %d negative", c.sc.Name(), a, len(pos), len(neg))
		}
	}
}

// Human references (positive continuations) are ordinary text: the guards must barely touch them,
// their words must be known, and most must score positive.
func TestEvalReferencesAreScoredFairly(t *testing.T) {
	type example struct{ Prompt, Reference string }
	exs := readJSONL[example](t, "../task/reviews/data/eval.jsonl")
	total, known := 0, 0
	for _, e := range exs {
		for _, w := range Words(e.Reference) {
			total++
			if IsWord(w) {
				known++
			}
		}
	}
	if cov := float64(known) / float64(total); cov < 0.97 {
		t.Errorf("only %.3f of reference tokens are known words", cov)
	}
	scores := map[string][]float64{}
	for _, sc := range scorers() {
		guard, positive := 0.0, 0
		for _, e := range exs {
			b := sc.Breakdown(e.Reference)
			guard += b.Quality * b.Fluency * b.Function * b.Density * b.Topic
			if b.Score > 0 {
				positive++
			}
			scores[sc.Name()] = append(scores[sc.Name()], b.Score)
		}
		guard /= float64(len(exs))
		frac := float64(positive) / float64(len(exs))
		t.Logf("%s: mean guard factor %.3f, positive fraction %.3f", sc.Name(), guard, frac)
		if guard < 0.9 || frac < 0.6 {
			t.Errorf("%s: mean guard factor %.3f (want >= 0.9), positive fraction %.3f (want >= 0.6)", sc.Name(), guard, frac)
		}
	}
	// The held-out evaluators agree with the gold one on the whole but are not copies of it.
	for _, c := range []struct {
		name     string
		min, max float64
	}{{"afinn", 0.5, 0.98}, {"classifier", 0.3, 0.9}} {
		if rho := spearman(scores["sentiment"], scores[c.name]); rho < c.min || rho > c.max {
			t.Errorf("Spearman(sentiment, %s) on references = %.3f, want in [%v, %v]", c.name, rho, c.min, c.max)
		} else {
			t.Logf("Spearman(sentiment, %s) on %d references = %.3f", c.name, len(exs), rho)
		}
	}
}

func ranks(x []float64) []float64 {
	idx := make([]int, len(x))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return x[idx[a]] < x[idx[b]] })
	r := make([]float64, len(x))
	for i := 0; i < len(idx); {
		j := i
		for j+1 < len(idx) && x[idx[j+1]] == x[idx[i]] {
			j++
		}
		for k := i; k <= j; k++ {
			r[idx[k]] = float64(i+j) / 2
		}
		i = j + 1
	}
	return r
}

func spearman(a, b []float64) float64 {
	ra, rb := ranks(a), ranks(b)
	n := float64(len(a))
	var ma, mb float64
	for i := range ra {
		ma += ra[i] / n
		mb += rb[i] / n
	}
	var sab, saa, sbb float64
	for i := range ra {
		sab += (ra[i] - ma) * (rb[i] - mb)
		saa += (ra[i] - ma) * (ra[i] - ma)
		sbb += (rb[i] - mb) * (rb[i] - mb)
	}
	return sab / math.Sqrt(saa*sbb)
}
