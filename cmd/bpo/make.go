package main

// bpo tokenizer, bpo pretrain and bpo sft: build a base model folder and its SFT adapters
// (trainer/pretrain). `make models` runs them to produce trainer/task/models/tiny-reviews.

import (
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/bpo-dev/bpo/trainer/model"
	"github.com/bpo-dev/bpo/trainer/optim"
	"github.com/bpo-dev/bpo/trainer/pretrain"
	"github.com/bpo-dev/bpo/trainer/sample"
	"github.com/bpo-dev/bpo/trainer/task"
	"github.com/bpo-dev/bpo/trainer/tokenizer"
)

func extraCommands() []*cobra.Command {
	return []*cobra.Command{tokenizerCmd(), pretrainCmd(), sftCmd(), benchCmd()}
}

// loadTaskArg is a built-in task name or a task folder.
func loadTaskArg(name string) (*task.Task, error) {
	if st, err := os.Stat(name); err == nil && st.IsDir() {
		return task.Load(name)
	}
	return task.Builtin(name)
}

// lmFlags are the optimisation flags shared by pretrain and sft.
type lmFlags struct {
	o        pretrain.LMOptions
	logEvery int
	samples  int
	prompts  []string
}

func (f *lmFlags) register(c *cobra.Command, steps int, lr, wd float64) {
	fl := c.Flags()
	fl.IntVar(&f.o.Steps, "steps", steps, "optimizer steps"+map[bool]string{true: " per member", false: ""}[c.Name() == "sft"])
	fl.IntVar(&f.o.Batch, "batch", 16, "rows of n_positions tokens per step")
	fl.Float64Var(&f.o.LR, "lr", lr, "peak learning rate")
	fl.Float64Var(&f.o.MinLRRatio, "min-lr-ratio", 0.1, "final learning rate as a fraction of --lr")
	fl.IntVar(&f.o.Warmup, "warmup", 0, "warm-up steps (0: steps/20, at most 200; -1: none)")
	fl.StringVar((*string)(&f.o.Schedule), "schedule", string(optim.Cosine), "decay after warm-up: cosine, linear or constant")
	fl.Float64Var(&f.o.WeightDecay, "weight-decay", wd, "AdamW weight decay on matrices")
	fl.Float64Var(&f.o.MaxGradNorm, "max-grad-norm", 1, "global gradient-norm clip (negative: none)")
	fl.Uint64Var(&f.o.Seed, "seed", 1, "random seed (weights or adapters, data order)")
	fl.IntVar(&f.o.EvalEvery, "eval-every", 0, "held-out evaluation period in steps (0: steps/10)")
	fl.IntVar(&f.logEvery, "log-every", 50, "print a progress line every N steps")
	fl.IntVar(&f.samples, "samples", 3, "sampled (temperature 1) continuations printed per prompt at the end, besides the greedy one (0: none)")
	fl.StringArrayVar(&f.prompts, "prompt", []string{"The food was", "This movie is", "I bought this"}, "prompt for the continuations printed at the end (repeatable; --prompt '' for none)")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// progressPrinter prints every logEvery steps, every evaluation and checkpoint.
func progressPrinter(out io.Writer, logEvery int) func(pretrain.LMProgress) error {
	var last time.Duration // elapsed at the last line
	var toks int           // tokens since the last line
	return func(p pretrain.LMProgress) error {
		if p.Elapsed < last { // the next SFT member
			last, toks = 0, 0
		}
		toks += p.StepTokens
		if p.Step%max(logEvery, 1) == 0 || p.Evaluated || p.Step == p.Steps {
			rate := float64(toks) / (p.Elapsed - last).Seconds()
			last, toks = p.Elapsed, 0
			who := ""
			if p.Members > 1 || p.Member > 0 {
				who = fmt.Sprintf("member %d/%d ", p.Member, p.Members)
			}
			line := fmt.Sprintf("%sstep %d/%d loss %.4f lr %.3g |g| %.3g %.0f tok/s %s", who, p.Step, p.Steps, p.Loss, p.LR, p.GradNorm,
				rate, p.Elapsed.Round(time.Second))
			if p.Evaluated {
				line += fmt.Sprintf("  held-out %.4f nats/byte", p.HeldOut)
			}
			if p.Checkpointed {
				line += "  [checkpoint]"
			}
			fmt.Fprintln(out, line)
		}
		return nil
	}
}

// printContinuations prints the greedy and `samples` temperature-1 continuations of each prompt
// (64 new tokens at most, stopping at end-of-text).
func printContinuations(out io.Writer, label string, w *model.Weights, tok tokenizer.Tokenizer, all []string, samples int, seed uint64) error {
	var prompts []string
	for _, p := range all {
		if p != "" {
			prompts = append(prompts, p)
		}
	}
	if len(prompts) == 0 {
		return nil
	}
	m := model.NewInference(w)
	ids := make([][]int, len(prompts))
	for i, p := range prompts {
		ids[i] = tok.Encode(p)
	}
	fmt.Fprintf(out, "continuations (%s):\n", label)
	greedy, err := sample.Generate(m, ids, sample.Options{Greedy: true, MaxNewTokens: 64, EOT: tok.EOT()})
	if err != nil {
		return err
	}
	var rows [][]int
	for _, p := range ids {
		for range samples {
			rows = append(rows, p)
		}
	}
	var drawn [][]int
	if samples > 0 {
		if drawn, err = sample.Generate(m, rows, sample.Options{Temperature: 1, MaxNewTokens: 64, EOT: tok.EOT(), Seed: seed}); err != nil {
			return err
		}
	}
	for i, p := range prompts {
		fmt.Fprintf(out, "  %q\n    greedy: %q\n", p, tok.Decode(greedy[i]))
		for k := range samples {
			fmt.Fprintf(out, "    T=1:    %q\n", tok.Decode(drawn[i*samples+k]))
		}
	}
	return nil
}

func pretrainCmd() *cobra.Command {
	var f lmFlags
	var taskName, out, ckptDir, layout, corpus, tokDir, dtype string
	var width, layers, heads, context, ckptEvery int
	var keepCkpt bool
	c := &cobra.Command{
		Use:   "pretrain (--task reviews | --corpus FILE) [--tokenizer TOKDIR] --out DIR",
		Short: "Pretrain a GPT-2 on a task's pretraining texts (or a corpus file) and write a model folder",
		Long: `Pretrain a GPT-2 from scratch (every weight trained) on the task's pretraining texts, or on
--corpus FILE (one document per line), and write DIR/config.json, DIR/model.safetensors (float32,
or float16 with --dtype float16: half the bytes, loaded back exactly as the rounded values) and
the tokenizer: byte-level by default (DIR/tokenizer_config.json), or the BPE of --tokenizer TOKDIR
(its vocab.json and merges.txt are written into DIR; see bpo tokenizer).
A checkpoint is written every --checkpoint-every steps; rerunning the same command resumes from
it and continues bit-identically. It is removed after success unless --keep-checkpoint.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			w := cmd.OutOrStdout()
			if out == "" {
				return fmt.Errorf("--out is required")
			}
			if dtype != "float32" && dtype != "float16" {
				return fmt.Errorf("--dtype %q: want float32 or float16", dtype)
			}
			texts, source, err := pretrainTexts(taskName, corpus)
			if err != nil {
				return err
			}
			var tok tokenizer.Tokenizer = tokenizer.Byte{}
			if tokDir != "" {
				if tok, err = tokenizer.FromDir(tokDir); err != nil {
					return err
				}
			}
			f.o.Tokenizer = tok
			cfg := pretrain.TokenizerConfig(tok, width, layers, heads, context)
			if err := cfg.Validate(); err != nil {
				return err
			}
			if ckptDir == "" {
				ckptDir = filepath.Clean(out) + ".ckpt"
			}
			f.o.Layout = layout
			o := pretrain.PretrainOptions{LMOptions: f.o, CheckpointDir: ckptDir, CheckpointEvery: ckptEvery,
				Progress: progressPrinter(w, f.logEvery)}
			fmt.Fprintf(w, "pretrain: d%d L%d H%d ctx%d vocab %d, %d steps x %d rows, lr %g (%s), weight decay %g, seed %d, %s (%d texts)\n",
				width, layers, heads, context, cfg.VocabSize, f.o.Steps, f.o.Batch, f.o.LR, f.o.Schedule, f.o.WeightDecay, f.o.Seed, source, len(texts))
			cpu0, t0 := cpuTime(), time.Now()
			wt, rep, err := pretrain.Pretrain(cfg, texts, o)
			if err != nil {
				return err
			}
			if err := pretrain.SaveBaseModel(out, wt, tok, dtype == "float16"); err != nil {
				return err
			}
			fmt.Fprintf(w, "pretrain: %d parameters; %d training texts (%d bytes), %d held-out (%d bytes); %d rows/epoch (%.1f%% full)\n",
				rep.Params, rep.TrainDocs, rep.TrainBytes, rep.HeldOutDocs, rep.HeldOutBytes, rep.RowsPerEpoch, 100*rep.Fill)
			if rep.ResumedFrom > 0 {
				fmt.Fprintf(w, "pretrain: resumed from step %d\n", rep.ResumedFrom)
			}
			fmt.Fprintf(w, "pretrain: %d tokens trained (%.1f epochs), wall %s, CPU %s\n", rep.Tokens,
				float64(rep.Tokens)/float64(rep.TrainTokens), time.Since(t0).Round(time.Second), (cpuTime() - cpu0).Round(time.Second))
			if !math.IsNaN(rep.TrainLoss) {
				fmt.Fprintf(w, "pretrain: train loss of the last steps %.4f nats/token\n", rep.TrainLoss)
			}
			fmt.Fprintf(w, "pretrain: held-out %.4f nats/byte (%.3f bits/byte)\n", rep.HeldOut, rep.HeldOut/math.Ln2)
			if dtype == "float16" {
				// What users load is the rounded model: measure it, and show its continuations.
				if wt, err = model.LoadWeights(out); err != nil {
					return err
				}
				h, err := pretrain.HeldOutNatsPerByte(wt, nil, tok, texts, f.o.Batch)
				if err != nil {
					return err
				}
				fmt.Fprintf(w, "pretrain: held-out %.4f nats/byte as written (float16)\n", h)
			}
			fmt.Fprintf(w, "wrote %s\n", out)
			if !keepCkpt {
				if err := os.RemoveAll(ckptDir); err != nil {
					return err
				}
			}
			return printContinuations(w, "base model", wt, tok, f.prompts, f.samples, f.o.Seed)
		},
	}
	f.register(c, 3000, 1e-3, 0.1)
	fl := c.Flags()
	fl.StringVar(&taskName, "task", "reviews", "built-in task name or task folder (its pretraining texts)")
	fl.StringVar(&corpus, "corpus", "", "pretrain on this file instead, one document per line (blank lines skipped)")
	fl.StringVar(&tokDir, "tokenizer", "", "folder with a BPE vocab.json and merges.txt (default: byte-level)")
	fl.StringVar(&out, "out", "", "model folder to write")
	fl.IntVar(&width, "width", 128, "n_embd")
	fl.IntVar(&layers, "layers", 2, "n_layer")
	fl.IntVar(&heads, "heads", 4, "n_head")
	fl.IntVar(&context, "context", 128, "n_positions (and the training row length)")
	fl.StringVar(&layout, "layout", pretrain.LayoutPacked, "packed (documents whole, attention confined to each) or stream (GPT-2 windows)")
	fl.StringVar(&ckptDir, "checkpoint-dir", "", "checkpoint folder (default: DIR.ckpt beside the output)")
	fl.IntVar(&ckptEvery, "checkpoint-every", 200, "checkpoint period in steps")
	fl.BoolVar(&keepCkpt, "keep-checkpoint", false, "keep the checkpoint after success")
	fl.StringVar(&dtype, "dtype", "float32", "weights on disk: float32, or float16 (half the bytes; training is float32 either way)")
	return c
}

func sftCmd() *cobra.Command {
	var f lmFlags
	var taskName, dir string
	var members, rank, join, minWords int
	var alpha float64
	c := &cobra.Command{
		Use:   "sft --model DIR --task reviews --members N",
		Short: "Train the SFT LoRA adapters that initialise the ensemble members",
		Long: `Train N LoRA adapters on the task's SFT texts (each text one sequence ending with
end-of-text, every token predicted), each with its own seed for A and for the data order, and
write DIR/adapters/member-<m>.safetensors (the folder is replaced). With --join N each example
is N texts of one group (sft.jsonl's "group": the reviews task's source and label) joined by a
space, so that the members learn to write N sentences rather than stop at the first full stop;
--min-words N leaves out the texts of fewer than N words (before the held-out split).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			w := cmd.OutOrStdout()
			if dir == "" {
				return fmt.Errorf("--model is required")
			}
			base, err := model.LoadWeights(dir)
			if err != nil {
				return err
			}
			tok, err := tokenizer.FromDir(dir)
			if err != nil {
				return err
			}
			f.o.Tokenizer = tok
			t, err := loadTaskArg(taskName)
			if err != nil {
				return err
			}
			if len(t.SFT) == 0 {
				return fmt.Errorf("task %s has no SFT texts", t.Name)
			}
			texts, groups := pretrain.KeepLong(t.SFT, t.SFTGroups, minWords)
			if len(texts) == 0 {
				return fmt.Errorf("--min-words %d leaves none of task %s's %d SFT texts; lower it", minWords, t.Name, len(t.SFT))
			}
			if join > 1 && t.SFTGroups == nil {
				return fmt.Errorf("--join %d: task %s's sft.jsonl has no \"group\" field; add one per line (texts of one group may be joined) or drop --join", join, t.Name)
			}
			fmt.Fprintf(w, "sft: %d members, rank %d, alpha %g, %d steps x %d rows each, lr %g, seed %d, task %s (%d texts of %d with at least %d words, joined by %d)\n",
				members, rank, alpha, f.o.Steps, f.o.Batch, f.o.LR, f.o.Seed, t.Name, len(texts), len(t.SFT), minWords, max(join, 1))
			o := pretrain.SFTOptions{LMOptions: f.o, Join: join, Groups: groups}
			held := pretrain.SFTHeldOut(texts, o)
			baseHeld, err := pretrain.NatsPerByte(base, nil, tok, held, f.o.Batch)
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "sft: base model held-out %.4f nats/byte on the SFT texts\n", baseHeld)
			cpu0, t0 := cpuTime(), time.Now()
			var final []float64
			show := progressPrinter(w, f.logEvery)
			o.Progress = func(p pretrain.LMProgress) error {
				if p.Step == p.Steps {
					final = append(final, p.HeldOut)
				}
				return show(p)
			}
			adapters, err := pretrain.SFT(base, texts, members, rank, alpha, o)
			if err != nil {
				return err
			}
			if err := pretrain.SaveSFTAdapters(dir, adapters); err != nil {
				return err
			}
			ens, err := pretrain.NatsPerByte(model.MergeMean(base, adapters), nil, tok, held, f.o.Batch)
			if err != nil {
				return err
			}
			parts := make([]string, len(final))
			for i, h := range final {
				parts[i] = fmt.Sprintf("%.4f", h)
			}
			fmt.Fprintf(w, "sft: wall %s, CPU %s\n", time.Since(t0).Round(time.Second), (cpuTime() - cpu0).Round(time.Second))
			fmt.Fprintf(w, "sft: held-out nats/byte on the SFT texts: base %.4f, members [%s], ensemble mean %.4f\n",
				baseHeld, strings.Join(parts, " "), ens)
			fmt.Fprintf(w, "wrote %s\n", filepath.Join(dir, pretrain.AdaptersDir))
			if err := printContinuations(w, "member 0 merged", model.MergeMean(base, adapters[:1]), tok, f.prompts, f.samples, f.o.Seed); err != nil {
				return err
			}
			return printContinuations(w, "ensemble mean", model.MergeMean(base, adapters), tok, f.prompts, f.samples, f.o.Seed)
		},
	}
	f.register(c, 150, 1e-3, 0)
	fl := c.Flags()
	fl.StringVar(&dir, "model", "", "model folder (adapters are written to DIR/adapters)")
	fl.StringVar(&taskName, "task", "reviews", "built-in task name or task folder")
	fl.IntVar(&members, "members", 8, "number of adapters (ensemble members)")
	fl.IntVar(&rank, "rank", 8, "LoRA rank")
	fl.Float64Var(&alpha, "alpha", 16, "LoRA alpha")
	fl.IntVar(&join, "join", 1, "texts of one group per SFT example (sft.jsonl \"group\"), joined by a space")
	fl.IntVar(&minWords, "min-words", 0, "train only on SFT texts of at least this many words (0: all)")
	return c
}

// pretrainTexts are the documents of --corpus (one per non-blank line) or else the task's
// pretraining texts, and a description of where they came from.
func pretrainTexts(taskName, corpus string) ([]string, string, error) {
	if corpus != "" {
		raw, err := os.ReadFile(corpus)
		if err != nil {
			return nil, "", err
		}
		texts := task.Documents(raw)
		if len(texts) == 0 {
			return nil, "", fmt.Errorf("--corpus %s: no documents (one per line)", corpus)
		}
		return texts, "corpus " + corpus, nil
	}
	t, err := loadTaskArg(taskName)
	if err != nil {
		return nil, "", err
	}
	if len(t.Pretrain) == 0 {
		return nil, "", fmt.Errorf("task %s has no pretraining texts (use --corpus FILE)", t.Name)
	}
	return t.Pretrain, "task " + t.Name, nil
}

func tokenizerCmd() *cobra.Command {
	var corpus, out string
	var vocab, minFreq int
	c := &cobra.Command{
		Use:   "tokenizer --corpus FILE --vocab N --out DIR",
		Short: "Train a byte-level BPE tokenizer on a corpus and write DIR/vocab.json and DIR/merges.txt",
		Long: `Train GPT-2's byte-level BPE (same pre-tokenisation, byte alphabet and file format, so Hugging
Face's GPT2Tokenizer loads the files) on the training part of --corpus (one document per line; the
held-out 2% that bpo pretrain evaluates on is left out) and write DIR/vocab.json and DIR/merges.txt.
--vocab counts the 256 byte tokens, the merges and <|endoftext|>. Same corpus, same files.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			w := cmd.OutOrStdout()
			if corpus == "" || out == "" {
				return fmt.Errorf("--corpus and --out are required")
			}
			texts, _, err := pretrainTexts("", corpus)
			if err != nil {
				return err
			}
			train, _ := pretrain.SplitHeldOut(texts)
			t0 := time.Now()
			bpe, err := tokenizer.TrainBPE(train, tokenizer.BPETrainOptions{VocabSize: vocab, MinFrequency: minFreq})
			if err != nil {
				return err
			}
			if err := os.MkdirAll(out, 0o755); err != nil {
				return err
			}
			if err := bpe.WriteFiles(out); err != nil {
				return err
			}
			bytes, toks := 0, 0
			for _, t := range train {
				bytes += len(t)
				toks += len(bpe.Encode(t))
			}
			fmt.Fprintf(w, "tokenizer: vocab %d trained on %d documents (%d bytes) in %s: %.2f bytes/token\n",
				bpe.VocabSize(), len(train), bytes, time.Since(t0).Round(time.Millisecond), float64(bytes)/float64(max(toks, 1)))
			fmt.Fprintf(w, "wrote %s\n", out)
			return nil
		},
	}
	fl := c.Flags()
	fl.StringVar(&corpus, "corpus", "", "training corpus, one document per line")
	fl.StringVar(&out, "out", "", "folder to write vocab.json and merges.txt to")
	fl.IntVar(&vocab, "vocab", 4096, "vocabulary size (256 bytes + merges + end-of-text)")
	fl.IntVar(&minFreq, "min-frequency", 2, "never merge a pair seen fewer times")
	return c
}
