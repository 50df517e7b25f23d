package pretrain

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/bpo-dev/bpo/trainer/optim"
	"github.com/bpo-dev/bpo/trainer/tokenizer"
)

// Data layouts of LMOptions.Layout (see the package comment).
const (
	LayoutPacked = "packed"
	LayoutStream = "stream"
)

// LMOptions are the optimisation settings shared by Pretrain and SFT. Zero values take the
// defaults noted (WeightDecay 0 means none).
type LMOptions struct {
	// Steps is the number of optimizer steps (required; per member for SFT).
	Steps int
	// Batch is the number of rows of SeqLen tokens per step (default 16).
	Batch int
	// SeqLen is the row length (default and maximum: the model's n_positions).
	SeqLen int
	// LR is the peak learning rate (default 1e-3).
	LR float64
	// MinLRRatio is the final learning rate as a fraction of LR (default 0.1; negative: 0).
	MinLRRatio float64
	// Warmup steps ramp the rate linearly up to LR (default Steps/20, at most 200; negative: none).
	Warmup int
	// Schedule is the decay from LR to MinLRRatio·LR over the steps after warm-up, reaching it
	// at the last step: optim.Cosine (default), optim.Linear or optim.Constant (no decay).
	Schedule optim.Schedule
	// WeightDecay is AdamW's decoupled decay, applied to matrices (Conv1D weights, wte, wpe;
	// LoRA A and B) but not to biases and LayerNorm parameters.
	WeightDecay float64
	// MaxGradNorm clips the global gradient norm (default 1; negative: no clipping).
	MaxGradNorm float64
	// Seed fixes the initial weights (Pretrain), the adapters' A (SFT) and the data order.
	Seed uint64
	// Layout is LayoutPacked (default) or LayoutStream. SFT always packs.
	Layout string
	// EvalEvery is the held-out evaluation period in steps (default Steps/10; negative: only at
	// the end). The last step is always evaluated.
	EvalEvery int
	// Tokenizer encodes the texts (nil: byte-level). The model's vocabulary must hold its ids
	// and its eos_token_id must be the tokenizer's end-of-text.
	Tokenizer tokenizer.Tokenizer `json:"-"`
}

// tok is the options' tokenizer, byte-level by default.
func (o LMOptions) tok() tokenizer.Tokenizer {
	if o.Tokenizer == nil {
		return tokenizer.Byte{}
	}
	return o.Tokenizer
}

// PretrainOptions configure Pretrain.
type PretrainOptions struct {
	LMOptions
	// CheckpointDir, when set, holds the checkpoint (CheckpointFile), written atomically every
	// CheckpointEvery steps (default 200) and after the last step. A run whose CheckpointDir
	// holds a checkpoint of the same pretraining (same config, options and texts) resumes from
	// it; one of a different pretraining is an error.
	CheckpointDir   string
	CheckpointEvery int
	// Progress, when set, is called after every step; an error stops the run (as a crash
	// would: nothing is written) and is returned.
	Progress func(LMProgress) error
}

// SFTOptions configure SFT.
type SFTOptions struct {
	LMOptions
	// Progress, when set, is called after every step of every member; an error stops SFT.
	Progress func(LMProgress) error
	// Join > 1 trains on examples of Join texts of one group each (JoinTexts); 0 or 1: each
	// text alone.
	Join int
	// Groups[i] is the group of the i-th SFT text (nil: all one group); used by Join.
	Groups []string
}

// LMProgress reports one optimizer step.
type LMProgress struct {
	// Member is the SFT member being trained (0 for pretraining), Members their number.
	Member, Members int
	Step, Steps     int // steps done, total
	// Loss is the step's mean NLL per predicted token (nats).
	Loss, LR, GradNorm float64
	// Tokens is the number of predicted tokens trained on so far (this member), StepTokens
	// those of this step.
	Tokens     int64
	StepTokens int
	Elapsed    time.Duration // since this process started the run (or member)
	// Evaluated is set when HeldOut (nats/byte) was measured after this step.
	Evaluated bool
	HeldOut   float64
	// Checkpointed is set when a checkpoint was written after this step.
	Checkpointed bool
}

// HeldOutPoint is one held-out evaluation.
type HeldOutPoint struct {
	Step        int     `json:"step"`
	NatsPerByte float64 `json:"natsPerByte"`
}

// PretrainReport summarises a pretraining.
type PretrainReport struct {
	Params                   int
	TrainDocs, HeldOutDocs   int
	TrainBytes, HeldOutBytes int
	// TrainTokens is the number of predicted tokens in one pass over the training texts.
	TrainTokens int
	// RowsPerEpoch and Fill describe the first epoch's layout: rows of SeqLen tokens and the
	// fraction of their positions holding a document token.
	RowsPerEpoch int
	Fill         float64
	Steps        int
	// ResumedFrom is the step the run resumed from (0: a fresh start).
	ResumedFrom int
	// Tokens is the number of predicted tokens trained on (all steps, resumed ones included).
	Tokens int64
	// TrainLoss is the mean training loss (nats/token) of the last 50 steps run by this process.
	TrainLoss float64
	// HeldOut is the final held-out loss in nats per byte; Curve every evaluation.
	HeldOut float64
	Curve   []HeldOutPoint
	// Elapsed is the wall time of this process's part of the run.
	Elapsed time.Duration
}

// withDefaults fills the defaults for a model of nPos positions and validates the options
// (the optimizer's own settings through optim.New).
func (o LMOptions) withDefaults(nPos int) (LMOptions, error) {
	if o.Steps <= 0 {
		return o, fmt.Errorf("steps must be > 0, got %d", o.Steps)
	}
	if o.Batch == 0 {
		o.Batch = 16
	}
	if o.SeqLen == 0 {
		o.SeqLen = nPos
	}
	if o.LR == 0 {
		o.LR = 1e-3
	}
	if o.MinLRRatio == 0 {
		o.MinLRRatio = 0.1
	} else if o.MinLRRatio < 0 {
		o.MinLRRatio = 0
	}
	if o.Warmup == 0 {
		o.Warmup = min(o.Steps/20, 200)
	} else if o.Warmup < 0 {
		o.Warmup = 0
	}
	if o.Schedule == "" {
		o.Schedule = optim.Cosine
	}
	if o.MaxGradNorm == 0 {
		o.MaxGradNorm = 1
	}
	if o.Layout == "" {
		o.Layout = LayoutPacked
	}
	if o.EvalEvery == 0 {
		o.EvalEvery = max(o.Steps/10, 1)
	}
	switch {
	case o.Batch < 0:
		return o, fmt.Errorf("batch must be > 0, got %d", o.Batch)
	case o.SeqLen < 2 || o.SeqLen > nPos:
		return o, fmt.Errorf("sequence length %d outside [2, n_positions %d]", o.SeqLen, nPos)
	case !(o.LR > 0) || math.IsInf(o.LR, 0):
		return o, fmt.Errorf("learning rate must be > 0 and finite, got %g", o.LR)
	case o.Warmup >= o.Steps:
		return o, fmt.Errorf("warmup (%d) must be shorter than steps (%d)", o.Warmup, o.Steps)
	case o.Layout != LayoutPacked && o.Layout != LayoutStream:
		return o, fmt.Errorf("unknown layout %q (valid: packed, stream)", o.Layout)
	}
	if _, err := optim.New(o.optimConfig()); err != nil {
		return o, err
	}
	return o, nil
}

// optimConfig is the AdamW of a run with these (defaulted) options: the schedule reaches its
// floor at the last step (TotalSteps = Steps-1; a one-step run takes its step at LR), and
// weight decay applies to the matrices only.
func (o LMOptions) optimConfig() optim.Config {
	return optim.Config{LR: o.LR, MaxGradNorm: o.MaxGradNorm, Warmup: o.Warmup, Decay: o.Schedule,
		TotalSteps: max(o.Steps-1, 1), MinLRRatio: o.MinLRRatio,
		Groups: []optim.Group{{Name: "matrices", Match: decays, WeightDecay: o.WeightDecay}}}
}

// decays reports whether weight decay applies to a tensor: matrices, not biases or LayerNorm.
func decays(name string) bool {
	if strings.HasSuffix(name, ".lora_A") || strings.HasSuffix(name, ".lora_B") {
		return true
	}
	return strings.HasSuffix(name, ".weight") && !strings.Contains(name, "ln_")
}
