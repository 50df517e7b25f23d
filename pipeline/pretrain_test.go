package pipeline

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/bpo-dev/bpo/trainer/model"
	"github.com/bpo-dev/bpo/trainer/pretrain"
	"github.com/bpo-dev/bpo/trainer/task"
	"github.com/bpo-dev/bpo/trainer/tokenizer"
)

// TestModelFolderLoads ties trainer/pretrain to the pipeline: the folder SaveBaseModel +
// SaveSFTAdapters write (what bpo pretrain and bpo sft write) is accepted by LoadBase, with the
// byte tokenizer and the SFT adapters as the members' initial adapters, at the paths both
// sides name.
func TestModelFolderLoads(t *testing.T) {
	tk, err := task.Builtin("reviews")
	if err != nil {
		t.Fatal(err)
	}
	cfg := pretrain.ByteConfig(16, 1, 2, 32)
	lm := pretrain.LMOptions{Steps: 5, Batch: 4, LR: 1e-2, Seed: 7}
	w, _, err := pretrain.Pretrain(cfg, tk.Pretrain[:200], pretrain.PretrainOptions{LMOptions: lm})
	if err != nil {
		t.Fatal(err)
	}
	volume := t.TempDir()
	dir := filepath.Join(volume, "models", "tiny")
	if err := pretrain.SaveBaseModel(dir, w, nil, false); err != nil {
		t.Fatal(err)
	}
	// the test run (makeRun) has 2 members of rank 2, alpha 4; write 3 to check replacement
	sft := func(members int, seed uint64) []*model.Adapter {
		ads, err := pretrain.SFT(w, tk.SFT[:100], members, 2, 4, pretrain.SFTOptions{LMOptions: pretrain.LMOptions{Steps: 3, Batch: 4, Seed: seed}})
		if err != nil {
			t.Fatal(err)
		}
		return ads
	}
	if err := pretrain.SaveSFTAdapters(dir, sft(3, 9)); err != nil {
		t.Fatal(err)
	}
	ads := sft(2, 1)
	if err := pretrain.SaveSFTAdapters(dir, ads); err != nil {
		t.Fatal(err)
	}
	for m := range 3 {
		if AdapterFile(dir, m) != pretrain.AdapterFile(dir, m) {
			t.Errorf("member %d: the pipeline reads %s, pretrain writes %s", m, AdapterFile(dir, m), pretrain.AdapterFile(dir, m))
		}
	}
	if _, err := os.Stat(AdapterFile(dir, 2)); !os.IsNotExist(err) {
		t.Errorf("a stale adapter survived: %v", err)
	}
	for _, f := range []string{"config.json", "model.safetensors", "tokenizer_config.json"} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o644 {
			t.Errorf("%s has mode %v", f, st.Mode().Perm())
		}
	}
	e := makeRun("folder").Env(t, volume)
	b, err := e.LoadBase()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := b.Tok.(tokenizer.Byte); !ok {
		t.Errorf("tokenizer %T, want byte-level", b.Tok)
	}
	if b.Weights.Config.NEmbd != cfg.NEmbd || b.Weights.Config.NPositions != cfg.NPositions || len(b.Init) != 2 {
		t.Errorf("loaded config %+v with %d member adapters", b.Weights.Config, len(b.Init))
	}
	for name, tw := range w.Tensors {
		for i, v := range tw.Data {
			if float64(float32(v)) != b.Weights.Tensors[name].Data[i] {
				t.Fatalf("%s[%d]: saved %v, loaded %v", name, i, v, b.Weights.Tensors[name].Data[i])
			}
		}
	}
	for m, a := range b.Init {
		for name, ta := range ads[m].Tensors {
			if float64(float32(ta.Data[0])) != a.Tensors[name].Data[0] {
				t.Errorf("member %d: %s not the SFT adapter", m, name)
			}
		}
	}
}
