package pretrain

import (
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/bpo-dev/bpo/trainer/model"
	"github.com/bpo-dev/bpo/trainer/tokenizer"
)

// TestSaveSFTAdaptersReplaces: the adapters folder holds exactly the last adapters written, and
// model.LoadAdapter reads them back (F32).
func TestSaveSFTAdaptersReplaces(t *testing.T) {
	cfg := tinyConfig()
	dir := t.TempDir()
	mk := func(n int, seed int64) []*model.Adapter {
		var ads []*model.Adapter
		for m := range n {
			ads = append(ads, model.NewAdapter(cfg, 2, 4, seed+int64(m)))
		}
		return ads
	}
	if err := SaveSFTAdapters(dir, mk(3, 1)); err != nil {
		t.Fatal(err)
	}
	ads := mk(2, 10)
	if err := SaveSFTAdapters(dir, ads); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(filepath.Join(dir, AdaptersDir))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Errorf("%d files in %s, want 2", len(entries), AdaptersDir)
	}
	for m, a := range ads {
		got, err := model.LoadAdapter(AdapterFile(dir, m))
		if err != nil {
			t.Fatal(err)
		}
		for name, ta := range a.Tensors {
			if float64(float32(ta.Data[0])) != got.Tensors[name].Data[0] {
				t.Errorf("member %d: %s not the adapter written", m, name)
			}
		}
	}
	for _, leftover := range []string{AdaptersDir + ".tmp", AdaptersDir + ".old"} {
		if _, err := os.Stat(filepath.Join(dir, leftover)); !os.IsNotExist(err) {
			t.Errorf("%s left behind (%v)", leftover, err)
		}
	}
}

// TestBPEModelFolder: pretraining with a BPE tokenizer, the folder SaveBaseModel writes (config,
// weights, vocab.json, merges.txt, a GPT2Tokenizer tokenizer_config.json) loads back as the
// same model and tokenizer, and the held-out measure of the loaded pair is the report's.
func TestBPEModelFolder(t *testing.T) {
	tk := reviewsTask(t)
	texts := tk.Pretrain[:300]
	train, _ := SplitHeldOut(texts)
	bpe, err := tokenizer.TrainBPE(train, tokenizer.BPETrainOptions{VocabSize: 300})
	if err != nil {
		t.Fatal(err)
	}
	cfg := TokenizerConfig(bpe, 16, 1, 2, 32)
	if cfg.VocabSize != bpe.VocabSize() || cfg.EOSTokenID != bpe.EOT() || cfg.BOSTokenID != bpe.EOT() {
		t.Fatalf("config %+v for a vocabulary of %d", cfg, bpe.VocabSize())
	}
	if _, _, err := Pretrain(tinyConfig(), texts, PretrainOptions{LMOptions: LMOptions{Steps: 2, Tokenizer: bpe}}); err == nil {
		t.Error("a byte-level config was accepted for a BPE tokenizer")
	}
	o := tinyOptions(10)
	o.Tokenizer = bpe
	w, rep, err := Pretrain(cfg, texts, o)
	if err != nil {
		t.Fatal(err)
	}
	if rep.TrainTokens >= rep.TrainBytes {
		t.Errorf("%d tokens for %d bytes: BPE did not compress", rep.TrainTokens, rep.TrainBytes)
	}
	dir := t.TempDir()
	if err := SaveBaseModel(dir, w, bpe, false); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"config.json", "model.safetensors", tokenizer.ConfigFile, "vocab.json", "merges.txt"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
	loadedTok, err := tokenizer.FromDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := loadedTok.(*tokenizer.BPE); !ok {
		t.Fatalf("loaded a %T tokenizer", loadedTok)
	}
	if s := texts[0]; !slices.Equal(loadedTok.Encode(s), bpe.Encode(s)) {
		t.Errorf("the loaded tokenizer encodes %q differently", s)
	}
	lw, err := model.LoadWeights(dir)
	if err != nil {
		t.Fatal(err)
	}
	if lw.Config.VocabSize != cfg.VocabSize {
		t.Errorf("loaded vocab_size %d", lw.Config.VocabSize)
	}
	got, err := HeldOutNatsPerByte(lw, nil, loadedTok, texts, 4)
	if err != nil {
		t.Fatal(err)
	}
	// the folder holds the weights in F32
	if math.Abs(got-rep.HeldOut) > 1e-4*rep.HeldOut {
		t.Errorf("held-out of the saved model %.6f, report %.6f", got, rep.HeldOut)
	}
	t.Logf("BPE vocab %d: %d tokens for %d bytes; held-out %.4f nats/byte", bpe.VocabSize(), rep.TrainTokens, rep.TrainBytes, rep.HeldOut)
}
