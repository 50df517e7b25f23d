package pretrain

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/bpo-dev/bpo/trainer/model"
	"github.com/bpo-dev/bpo/trainer/tokenizer"
)

// ByteConfig is a GPT-2 config for the byte-level tokenizer (vocab 257, EOT 256).
func ByteConfig(width, layers, heads, context int) model.Config {
	return TokenizerConfig(tokenizer.Byte{}, width, layers, heads, context)
}

// TokenizerConfig is a GPT-2 config for tok: vocab_size its vocabulary, bos and eos its EOT.
func TokenizerConfig(tok tokenizer.Tokenizer, width, layers, heads, context int) model.Config {
	return model.Config{ModelType: "gpt2", Architectures: []string{"GPT2LMHeadModel"}, VocabSize: tok.VocabSize(), NPositions: context,
		NEmbd: width, NLayer: layers, NHead: heads, LayerNormEpsilon: 1e-5, ActivationFunction: "gelu_new",
		BOSTokenID: tok.EOT(), EOSTokenID: tok.EOT()}
}

// Pretrain trains a GPT-2 of config cfg from scratch (model.Init with the seed) as a language
// model on texts (one document each, tokenised by the options' Tokenizer) with every base
// tensor trained, and returns the weights and a report. See the package comment for the data,
// the held-out measure, the optimiser, determinism and checkpoints.
func Pretrain(cfg model.Config, texts []string, opt PretrainOptions) (*model.Weights, PretrainReport, error) {
	var rep PretrainReport
	if err := checkModel(cfg, opt.tok()); err != nil {
		return nil, rep, fmt.Errorf("pretrain: %w", err)
	}
	o, err := opt.LMOptions.withDefaults(cfg.NPositions)
	if err != nil {
		return nil, rep, fmt.Errorf("pretrain: %w", err)
	}
	if opt.CheckpointEvery == 0 {
		opt.CheckpointEvery = 200
	}
	tok := o.tok()
	train, held := SplitHeldOut(texts)
	data := newLMData(tok, train, o.SeqLen, o.Layout, o.Seed)
	if len(data.docs) == 0 {
		return nil, rep, errors.New("pretrain: no non-empty training text")
	}
	if err := cfg.CheckMemory(); err != nil {
		return nil, rep, fmt.Errorf("pretrain: %w", err)
	}
	w := model.Init(cfg, int64(o.Seed))
	tr, err := model.NewLMTrainer(w, o.Batch, o.SeqLen, model.LMOptions{Packed: o.Layout == LayoutPacked})
	if err != nil {
		return nil, rep, fmt.Errorf("pretrain: %w", err)
	}
	evalTr := tr
	if o.Layout != LayoutPacked {
		if evalTr, err = model.NewLMTrainer(w, o.Batch, o.SeqLen, model.LMOptions{Packed: true}); err != nil {
			return nil, rep, fmt.Errorf("pretrain: %w", err)
		}
	}
	r, err := newLMRun(o, tr, evalTr, nil, tr.Params(), data, newHeldOutSet(tok, held, o.SeqLen))
	if err != nil {
		return nil, rep, fmt.Errorf("pretrain: %w", err)
	}
	r.progress = opt.Progress
	first := data.epochRows(0)
	rep = PretrainReport{TrainDocs: len(train), HeldOutDocs: len(held), HeldOutBytes: r.held.bytes,
		RowsPerEpoch: len(first), Fill: rowFill(first, o.SeqLen), Steps: o.Steps}
	for _, t := range train {
		rep.TrainBytes += len(t)
	}
	for _, d := range data.docs {
		rep.TrainTokens += len(d) - 1
	}
	for _, t := range w.Tensors {
		rep.Params += len(t.Data)
	}

	if opt.CheckpointDir != "" {
		fp := fingerprint(cfg, o, texts)
		path := filepath.Join(opt.CheckpointDir, CheckpointFile)
		st, err := loadCheckpoint(path, fp, w, r.opt, r.params)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return nil, rep, fmt.Errorf("pretrain: %w", err)
		default:
			r.step, r.tokens, r.curve = st.Step, st.Tokens, st.Curve
			rep.ResumedFrom = st.Step
			data.skip(st.Step, o.Batch)
		}
		r.checkpoint = func(step int) (bool, error) {
			if step%opt.CheckpointEvery != 0 && step != o.Steps {
				return false, nil
			}
			return true, saveCheckpoint(path, fp, w, r.opt, ckptState{Step: step, Tokens: r.tokens, Curve: r.curve})
		}
	}
	if err := r.run(); err != nil {
		return nil, rep, fmt.Errorf("pretrain: %w", err)
	}
	rep.Tokens, rep.TrainLoss, rep.Curve, rep.Elapsed = r.tokens, r.trainLoss(), r.curve, time.Since(r.start)
	if n := len(r.curve); n > 0 {
		rep.HeldOut = r.curve[n-1].NatsPerByte
	}
	return w, rep, nil
}
