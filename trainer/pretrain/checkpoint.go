package pretrain

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/bpo-dev/bpo/trainer/model"
	"github.com/bpo-dev/bpo/trainer/optim"
)

// CheckpointFile is the name of Pretrain's checkpoint inside PretrainOptions.CheckpointDir. It
// holds the weights as "w/<name>" and the optimizer's moments as optim.State.Tensors names
// them, all F64, and in its metadata the fingerprint of the pretraining and the ckptState.
const CheckpointFile = "pretrain.ckpt.safetensors"

const weightPrefix = "w/"

// ckptState is the run's own state in a checkpoint (the step count is also the optimizer's).
type ckptState struct {
	Step   int            `json:"step"`
	Tokens int64          `json:"tokens"`
	Curve  []HeldOutPoint `json:"curve"`
}

// fingerprintVersion changes when the same options stop meaning the same trajectory (2: one
// AdamW with parameter groups applying the scheduled rate, instead of two at the peak rate
// rescaled), so that a checkpoint of an older version is refused rather than continued.
const fingerprintVersion = 2

const tokenizerProbe = "The food was great, and the staff weren't unfriendly; I'd recommend it to anyone!"

// fingerprint identifies a pretraining: config, effective options and texts.
func fingerprint(cfg model.Config, o LMOptions, texts []string) string {
	h := sha256.New()
	for _, t := range texts {
		fmt.Fprintf(h, "%d:%s", len(t), t)
	}
	// The tokenizer is not serialisable as an option: its vocabulary size and its encoding of a
	// probe text stand for it (a different tokenizer of the same size splits the probe differently
	// in practice).
	tok := o.tok()
	fmt.Fprintf(h, "tokenizer:%d:%d:%v", tok.VocabSize(), tok.EOT(), tok.Encode(tokenizerProbe))
	data := hex.EncodeToString(h.Sum(nil))
	o.EvalEvery = 0 // evaluation does not change the trajectory
	b, _ := json.Marshal(struct {
		Version int
		Config  model.Config
		Options LMOptions
		Texts   string
	}{fingerprintVersion, cfg, o, data})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// saveCheckpoint writes the weights, the optimizer state and st to path, atomically.
func saveCheckpoint(path, fp string, w *model.Weights, opt *optim.AdamW, st ckptState) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if opt.Steps() != st.Step {
		return fmt.Errorf("checkpoint: optimizer at step %d, run at %d", opt.Steps(), st.Step)
	}
	tensors := map[string]*model.Tensor{}
	for n, t := range w.Tensors {
		tensors[weightPrefix+n] = t
	}
	for n, d := range opt.State().Tensors() {
		tensors[n] = &model.Tensor{Shape: []int{len(d)}, Data: d}
	}
	stj, _ := json.Marshal(st)
	meta := map[string]string{"fingerprint": fp, "state": string(stj), "step": strconv.Itoa(st.Step)}
	return model.WriteFileAtomicFunc(path, func(wr io.Writer) error {
		return model.EncodeTensors(wr, tensors, meta, "F64")
	})
}

// loadCheckpoint restores w (in place) and opt, which trains params, from path.
func loadCheckpoint(path, fp string, w *model.Weights, opt *optim.AdamW, params map[string][]float64) (ckptState, error) {
	var st ckptState
	if _, err := os.Stat(path); err != nil {
		return st, err
	}
	tensors, meta, err := model.LoadTensors(path)
	if err != nil {
		return st, err
	}
	if meta["fingerprint"] != fp {
		return st, fmt.Errorf("%s is the checkpoint of a different pretraining (config, options, texts or code version differ): remove it or use another checkpoint folder", path)
	}
	if err := json.Unmarshal([]byte(meta["state"]), &st); err != nil {
		return st, fmt.Errorf("%s: state: %w", path, err)
	}
	moments := map[string][]float64{}
	for n, t := range tensors {
		if !strings.HasPrefix(n, weightPrefix) {
			moments[n] = t.Data
		}
	}
	for n, t := range w.Tensors {
		src, ok := tensors[weightPrefix+n]
		if !ok || len(src.Data) != len(t.Data) {
			return st, fmt.Errorf("%s: missing or misshapen %s%s", path, weightPrefix, n)
		}
		copy(t.Data, src.Data) // in place: the training graph views these slices
	}
	if len(tensors)-len(moments) != len(w.Tensors) {
		return st, fmt.Errorf("%s: %d weight tensors, want %d", path, len(tensors)-len(moments), len(w.Tensors))
	}
	ost, err := optim.StateFromTensors(st.Step, moments)
	if err == nil {
		err = opt.Restore(ost)
	}
	if err == nil {
		err = opt.Check(params)
	}
	if err != nil {
		return st, fmt.Errorf("%s: %w", path, err)
	}
	return st, nil
}
