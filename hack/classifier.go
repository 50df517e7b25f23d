//go:build ignore

// classifier trains the held-out evaluator "classifier" of trainer/annotator (a logistic regression
// over word unigrams and bigrams) on the training split of the reviews task and writes its weights:
//
//	go run hack/classifier.go [-root REPO_ROOT]
//
// Input: trainer/task/reviews/data/sft.jsonl (the 2,424 training UCI sentences with their labels;
// never validation.jsonl or eval.jsonl). Output: trainer/annotator/data/classifier.json. The
// training is annotator.TrainClassifier: deterministic, so a rerun writes the same bytes (the
// package's TestClassifierJSONIsFresh checks that the vendored file equals a fresh training).
//
// It also prints what the weights are worth: 5-fold cross-validated accuracy on the training split
// (fold = row index mod 5; each class weighs half, so chance is 0.5) and the accuracy on the
// held-out positive sentences of validation.jsonl and eval.jsonl (reference continuations alone,
// and prompt + reference), which are read only to be scored.
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

	"github.com/bpo-dev/bpo/trainer/annotator"
)

const folds = 5

func main() {
	root := flag.String("root", ".", "repository root")
	flag.Parse()
	if err := run(*root); err != nil {
		fmt.Fprintln(os.Stderr, "classifier:", err)
		os.Exit(1)
	}
}

func run(root string) error {
	taskDir := filepath.Join(root, "trainer", "task", "reviews", "data")
	var raw []struct {
		Text  string `json:"text"`
		Label *int   `json:"label"`
	}
	if err := readJSONL(filepath.Join(taskDir, "sft.jsonl"), &raw); err != nil {
		return err
	}
	rows := make([]annotator.LabelledText, len(raw))
	for i, r := range raw {
		if r.Label == nil {
			return fmt.Errorf("sft.jsonl:%d: no label", i+1)
		}
		rows[i] = annotator.LabelledText{Text: r.Text, Label: *r.Label}
	}
	data, err := annotator.TrainClassifier(rows)
	if err != nil {
		return err
	}
	out := filepath.Join(root, "trainer", "annotator", "data", "classifier.json")
	if err := os.WriteFile(out, data, 0o644); err != nil {
		return err
	}
	sum := sha256.Sum256(data)
	var f struct {
		Weights map[string]json.RawMessage `json:"weights"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return err
	}
	pos := 0
	for _, r := range rows {
		pos += r.Label
	}
	fmt.Printf("trained on %d sentences (%d positive, %d negative): %d weights, %d bytes, sha256 %s\n",
		len(rows), pos, len(rows)-pos, len(f.Weights), len(data), hex.EncodeToString(sum[:8]))

	// Cross-validation: balanced accuracy (mean of the per-class accuracies) and plain accuracy.
	var right, total [2]int
	for k := 0; k < folds; k++ {
		var train, test []annotator.LabelledText
		for i, r := range rows {
			if i%folds == k {
				test = append(test, r)
			} else {
				train = append(train, r)
			}
		}
		fd, err := annotator.TrainClassifier(train)
		if err != nil {
			return err
		}
		sc, err := annotator.NewClassifierFromJSON(fd)
		if err != nil {
			return err
		}
		for _, r := range test {
			total[r.Label]++
			if (sc.Breakdown(r.Text).Unguarded > 0) == (r.Label == 1) {
				right[r.Label]++
			}
		}
	}
	acc := float64(right[0]+right[1]) / float64(total[0]+total[1])
	bal := (float64(right[0])/float64(total[0]) + float64(right[1])/float64(total[1])) / 2
	fmt.Printf("%d-fold cross-validation: accuracy %.3f, balanced %.3f (negative %.3f, positive %.3f)\n",
		folds, acc, bal, float64(right[0])/float64(total[0]), float64(right[1])/float64(total[1]))

	// Held-out positives, scored by the weights just written.
	sc, err := annotator.NewClassifierFromJSON(data)
	if err != nil {
		return err
	}
	type example struct{ Prompt, Reference string }
	var exs []example
	for _, name := range []string{"validation.jsonl", "eval.jsonl"} {
		var part []example
		if err := readJSONL(filepath.Join(taskDir, name), &part); err != nil {
			return err
		}
		exs = append(exs, part...)
	}
	ref, full := 0, 0
	for _, e := range exs {
		if sc.Breakdown(e.Reference).Unguarded > 0 {
			ref++
		}
		if sc.Breakdown(e.Prompt+e.Reference).Unguarded > 0 {
			full++
		}
	}
	fmt.Printf("held-out positives (validation + eval, %d): accuracy %.3f on the continuations, %.3f on the whole sentences\n",
		len(exs), float64(ref)/float64(len(exs)), float64(full)/float64(len(exs)))
	fmt.Printf("wrote %s\n", out)
	return nil
}

func readJSONL[T any](path string, out *[]T) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for n := 1; sc.Scan(); n++ {
		var v T
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			return fmt.Errorf("%s:%d: %w", path, n, err)
		}
		*out = append(*out, v)
	}
	return sc.Err()
}
