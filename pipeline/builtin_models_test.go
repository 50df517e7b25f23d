package pipeline

import (
	"strings"
	"testing"

	"github.com/bpo-dev/bpo/trainer/annotator"
	"github.com/bpo-dev/bpo/trainer/model"
	"github.com/bpo-dev/bpo/trainer/sample"
	"github.com/bpo-dev/bpo/trainer/task"
	"github.com/bpo-dev/bpo/trainer/tokenizer"
)

// TestBuiltinModels loads every bundled model the way a run does (spec.model.builtin) with all 8
// SFT adapters, and checks what trainer/task/models/README.md says of it: the tokenizer, the
// shape, and for the BPE models (the quickstart's) that greedy decoding writes words and stops.
func TestBuiltinModels(t *testing.T) {
	want := map[string]struct {
		bpe               bool
		vocab, pos, width int
	}{
		"small-reviews":    {true, 4096, 192, 192},
		"small-reviews-v2": {true, 4096, 192, 192},
		"tiny-reviews":     {false, 257, 128, 96},
	}
	names := task.ModelNames()
	if len(names) != len(want) {
		t.Errorf("built-in models %v, want %d", names, len(want))
	}
	for _, name := range names {
		w, ok := want[name]
		if !ok {
			t.Errorf("built-in model %s is not described by this test", name)
			continue
		}
		t.Run(name, func(t *testing.T) {
			b := makeRun("builtin-" + name)
			b.ar.Spec.Model.Path, b.ar.Spec.Model.Builtin = "", name
			b.ar.Spec.Ensemble.Members, b.ar.Spec.Ensemble.Rank, b.ar.Spec.Ensemble.Alpha = 8, 8, 16
			e := b.Env(t, t.TempDir())
			base, err := e.LoadBase()
			if err != nil {
				t.Fatal(err)
			}
			cfg := base.Weights.Config
			_, isBPE := base.Tok.(*tokenizer.BPE)
			if isBPE != w.bpe || cfg.VocabSize != w.vocab || base.Tok.VocabSize() != w.vocab || cfg.NPositions != w.pos ||
				cfg.NEmbd != w.width || cfg.EOSTokenID != base.Tok.EOT() || len(base.Init) != 8 {
				t.Fatalf("tokenizer %T (%d tokens, EOT %d), config %+v, %d adapters", base.Tok, base.Tok.VocabSize(), base.Tok.EOT(), cfg, len(base.Init))
			}
			if !w.bpe {
				return
			}
			prompts := []string{"The food was", "I bought this", "This movie is", "The staff"}
			ids := make([][]int, len(prompts))
			for i, p := range prompts {
				ids[i] = base.Tok.Encode(p)
			}
			out, err := sample.Generate(model.NewInference(model.MergeMean(base.Weights, base.Init)), ids,
				sample.Options{Greedy: true, MaxNewTokens: 64, EOT: base.Tok.EOT()})
			if err != nil {
				t.Fatal(err)
			}
			for i, o := range out {
				text := base.Tok.Decode(o)
				words := annotator.Words(text)
				known := 0
				for _, wd := range words {
					if annotator.IsWord(wd) {
						known++
					}
				}
				t.Logf("%q -> %q", prompts[i], text)
				stopped := len(o) < 64 // Generate drops the end-of-text it stops at
				if len(words) < 2 || known < len(words)*3/4 || !stopped || strings.Contains(text, "\ufffd") {
					t.Errorf("%q -> %q: %d words, %d dictionary words, stopped %v", prompts[i], text, len(words), known, stopped)
				}
			}
		})
	}
}
