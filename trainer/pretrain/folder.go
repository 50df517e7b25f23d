package pretrain

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/bpo-dev/bpo/trainer/model"
	"github.com/bpo-dev/bpo/trainer/tokenizer"
)

// AdaptersDir is the folder of a model folder that holds the SFT adapters.
const AdaptersDir = "adapters"

// AdapterFile is where a model folder keeps the SFT adapter that initialises member m.
func AdapterFile(dir string, m int) string {
	return filepath.Join(dir, AdaptersDir, adapterName(m))
}

func adapterName(m int) string { return fmt.Sprintf("member-%d.safetensors", m) }

// SaveBaseModel writes a model folder: config.json, model.safetensors (float32, or float16 when
// f16: half the bytes, model.SaveWeightsF16) and the tokenizer: tokenizer_config.json
// {"tokenizer_class": "byte"} for the byte-level one (nil too), or a BPE's vocab.json and
// merges.txt with a Hugging Face GPT2Tokenizer tokenizer_config.json.
func SaveBaseModel(dir string, w *model.Weights, tok tokenizer.Tokenizer, f16 bool) error {
	save := model.SaveWeights
	if f16 {
		save = model.SaveWeightsF16
	}
	if err := save(dir, w); err != nil {
		return err
	}
	switch t := tok.(type) {
	case nil, tokenizer.Byte:
		return model.WriteFileAtomic(filepath.Join(dir, tokenizer.ConfigFile), []byte("{\"tokenizer_class\": \"byte\"}\n"))
	case *tokenizer.BPE:
		if err := t.WriteFiles(dir); err != nil {
			return err
		}
		cfg := fmt.Sprintf(`{
  "tokenizer_class": "GPT2Tokenizer",
  "bos_token": %q,
  "eos_token": %q,
  "unk_token": %q,
  "add_prefix_space": false,
  "model_max_length": %d
}
`, tokenizer.EndOfText, tokenizer.EndOfText, tokenizer.EndOfText, w.Config.NPositions)
		return model.WriteFileAtomic(filepath.Join(dir, tokenizer.ConfigFile), []byte(cfg))
	default:
		return fmt.Errorf("save model: cannot write a %T tokenizer", tok)
	}
}

// SaveSFTAdapters replaces the adapters folder of the model folder dir with the given adapters
// (AdapterFile, F32). The new folder is written beside the old one and renamed over it.
func SaveSFTAdapters(dir string, adapters []*model.Adapter) error {
	final := filepath.Join(dir, AdaptersDir)
	tmp := final + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return err
	}
	for m, a := range adapters {
		if err := model.SaveAdapter(filepath.Join(tmp, adapterName(m)), a); err != nil {
			return err
		}
	}
	old := final + ".old"
	if err := os.RemoveAll(old); err != nil {
		return err
	}
	if _, err := os.Stat(final); err == nil {
		if err := os.Rename(final, old); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp, final); err != nil {
		return err
	}
	return os.RemoveAll(old)
}
