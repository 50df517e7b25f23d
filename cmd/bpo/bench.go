package main

// bpo bench: the trainer's speed at one config and thread count (hack/bench.sh, `make bench`,
// compares it with PyTorch float32 measured in the same run by hack/torch_bench.py, which
// prints the same JSON fields and counts FLOPs with the same formulas).

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	gorgonia "gorgonia.org/gorgonia"

	"github.com/bpo-dev/bpo/trainer/blas"
	"github.com/bpo-dev/bpo/trainer/loss"
	"github.com/bpo-dev/bpo/trainer/model"
	"github.com/bpo-dev/bpo/trainer/optim"
	"github.com/bpo-dev/bpo/trainer/sample"
)

// benchConfig is the measured shape; its JSON is the "config" object of every record.
type benchConfig struct {
	Width   int `json:"width"`
	Layers  int `json:"layers"`
	Heads   int `json:"heads"`
	Context int `json:"context"`
	Vocab   int `json:"vocab"`
	Batch   int `json:"batch"`
	Rank    int `json:"rank"`
}

// benchResult is one measurement, one JSON object per line with --json. The rates use the
// median step time, the *_best ones the fastest step (less sensitive to other load on a shared
// machine). A peak record has only gflops and the backend fields.
type benchResult struct {
	What string `json:"what"` // train, sample or peak
	// Tokens says what tokens_per_s counts: "trained" (batch·context per optimizer step) or
	// "generated" (new tokens; prompt prefill is timed but not counted).
	Tokens         string       `json:"tokens,omitempty"`
	TokensPerS     float64      `json:"tokens_per_s,omitempty"`
	TokensPerSBest float64      `json:"tokens_per_s_best,omitempty"`
	StepMS         float64      `json:"step_ms,omitempty"`
	StepMSBest     float64      `json:"step_ms_best,omitempty"`
	Steps          int          `json:"steps,omitempty"`
	GFLOPs         float64      `json:"gflops"`
	GFLOPsBest     float64      `json:"gflops_best,omitempty"`
	Threads        int          `json:"threads"`
	GOMAXPROCS     int          `json:"gomaxprocs"`
	Precision      string       `json:"precision,omitempty"`
	Backend        string       `json:"backend"`
	Core           string       `json:"core"`
	Config         *benchConfig `json:"config,omitempty"`
}

type benchFlags struct {
	what      string
	cfg       benchConfig
	alpha     float64
	threads   int
	seconds   float64
	precision string
	seed      uint64
	json      bool
	profile   string
}

func benchCmd() *cobra.Command {
	var f benchFlags
	c := &cobra.Command{
		Use:   "bench",
		Short: "Time a LoRA DPO optimizer step and KV-cache sampling on a random GPT-2 (tokens/s, GFLOP/s, JSON)",
		Long: `bench times, on a randomly initialised GPT-2 of the given shape:

  train   one optimizer step of one LoRA ensemble member, as the train stage runs it: forward and
          backward of --batch sequences (batch/2 preference pairs; prompt = the first half of
          --context, response = the second half), the DPO loss (beta 0.1), global gradient-norm
          clipping at 1.0 and AdamW. tokens = batch·context per step.
  sample  batched sampling with the KV cache through the sampler the sample stage uses
          (temperature 1): --batch rows with prompts of context/2 random tokens, each generating
          context/2 new tokens (no end-of-text stop). tokens = generated tokens.
  peak    the BLAS's measured SGEMM rate (GFLOP/s), the peak the FLOP rates are quoted against.

Each measurement runs warm-up steps, then steps until --seconds have passed (at least 3), and
reports the median and the best step. GFLOP/s are "model FLOPs" (N = 12·L·d² + V·d):
train 6·N + 12·L·T·d per token; sampling 2·N + 4·L·d·t per generated token, t the positions it
attends to. hack/torch_bench.py prints the same fields for PyTorch.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if f.profile != "" {
				pf, err := os.Create(f.profile)
				if err != nil {
					return fmt.Errorf("--cpuprofile: %w", err)
				}
				defer pf.Close()
				if err := pprof.StartCPUProfile(pf); err != nil {
					return fmt.Errorf("--cpuprofile: %w", err)
				}
				defer pprof.StopCPUProfile()
			}
			return runBench(f, c.OutOrStdout(), c.ErrOrStderr())
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.what, "what", "all", "train, sample, peak or all")
	fl.IntVar(&f.cfg.Width, "width", 128, "n_embd")
	fl.IntVar(&f.cfg.Layers, "layers", 4, "n_layer")
	fl.IntVar(&f.cfg.Heads, "heads", 0, "n_head (0: width/32, i.e. head size 32)")
	fl.IntVar(&f.cfg.Context, "context", 128, "tokens per sequence (n_positions); half prompt, half response")
	fl.IntVar(&f.cfg.Vocab, "vocab", 4096, "vocabulary size")
	fl.IntVar(&f.cfg.Batch, "batch", 16, "sequences per step (train: batch/2 pairs) or rows sampled together")
	fl.IntVar(&f.cfg.Rank, "rank", 8, "LoRA rank")
	fl.Float64Var(&f.alpha, "alpha", 16, "LoRA alpha")
	fl.IntVar(&f.threads, "threads", 0, "BLAS threads and GOMAXPROCS (0: the defaults)")
	fl.Float64Var(&f.seconds, "seconds", 10, "time budget per measurement, after warm-up")
	fl.StringVar(&f.precision, "precision", "float32", "compute precision of the trainer and the inference path: float32 or float64")
	fl.Uint64Var(&f.seed, "seed", 1, "random seed (weights, adapter, tokens)")
	fl.StringVar(&f.profile, "cpuprofile", "", "write a CPU profile of the measurements to this file (go tool pprof)")
	fl.BoolVar(&f.json, "json", false, "print one JSON object per measurement per line (nothing else on stdout)")
	return c
}

func runBench(f benchFlags, stdout, stderr io.Writer) error {
	var whats []string
	switch f.what {
	case "all":
		whats = []string{"train", "sample", "peak"}
	case "train", "sample", "peak":
		whats = []string{f.what}
	default:
		return fmt.Errorf("--what %q: want train, sample, peak or all", f.what)
	}
	prec, err := model.ParsePrecision(f.precision)
	if err != nil {
		return err
	}
	if !(f.seconds >= 0) || math.IsInf(f.seconds, 0) {
		return fmt.Errorf("--seconds must be >= 0, got %g", f.seconds)
	}
	if f.cfg.Heads == 0 {
		f.cfg.Heads = max(1, f.cfg.Width/32)
	}
	cfg := model.Config{ModelType: "gpt2", VocabSize: f.cfg.Vocab, NPositions: f.cfg.Context, NEmbd: f.cfg.Width,
		NLayer: f.cfg.Layers, NHead: f.cfg.Heads, LayerNormEpsilon: 1e-5, ActivationFunction: "gelu_new",
		BOSTokenID: f.cfg.Vocab - 1, EOSTokenID: f.cfg.Vocab - 1}
	if err := cfg.Validate(); err != nil {
		return err
	}
	switch {
	case f.cfg.Context < 4:
		return fmt.Errorf("--context must be >= 4, got %d", f.cfg.Context)
	case f.cfg.Batch < 2 || f.cfg.Batch%2 != 0:
		return fmt.Errorf("--batch must be even and >= 2 (chosen and rejected rows), got %d", f.cfg.Batch)
	case f.cfg.Rank <= 0 || !(f.alpha > 0):
		return fmt.Errorf("need --rank > 0 and --alpha > 0, got %d and %g", f.cfg.Rank, f.alpha)
	}
	if f.threads > 0 {
		blas.SetThreads(f.threads)
		runtime.GOMAXPROCS(f.threads)
	}
	info := blas.Backend()
	var results []benchResult
	var base *model.Weights
	if f.what != "peak" {
		if err := cfg.CheckMemory(); err != nil {
			return err
		}
		base = model.Init(cfg, int64(f.seed))
	}
	for _, what := range whats {
		r := benchResult{What: what, Threads: blas.Threads(), GOMAXPROCS: runtime.GOMAXPROCS(0), Backend: info.Name, Core: info.CoreType}
		if what != "peak" {
			c := f.cfg
			r.Config = &c
		}
		shape := "SGEMM 1024"
		if what != "peak" {
			shape = fmt.Sprintf("d%d L%d H%d T%d V%d B%d r%d", f.cfg.Width, f.cfg.Layers, f.cfg.Heads, f.cfg.Context,
				f.cfg.Vocab, f.cfg.Batch, f.cfg.Rank)
		}
		fmt.Fprintf(stderr, "bench: %s %s, %d threads (%s %s)...\n", what, shape, r.Threads, info.Name, info.CoreType)
		switch what {
		case "train":
			r.Tokens, r.Precision = "trained", string(prec)
			err = benchTrain(&r, f, cfg, base, prec, stderr)
		case "sample":
			r.Tokens = "generated"
			err = benchSample(&r, f, base, prec, stderr)
		case "peak":
			r.GFLOPs = blas.Peak(max(f.seconds, 0.01))
		}
		if err != nil {
			return fmt.Errorf("bench %s: %w", what, err)
		}
		if f.json {
			line, err := json.Marshal(r)
			if err != nil {
				return err
			}
			if _, err := fmt.Fprintf(stdout, "%s\n", line); err != nil {
				return err
			}
		}
		results = append(results, r)
	}
	if !f.json {
		return printBenchTable(stdout, results)
	}
	return nil
}

// benchParams is N, the parameter count of the FLOP convention: 12·L·d² for the blocks (QKV,
// attention output and the 4d MLP) and V·d for the tied output projection (the logits).
func benchParams(c benchConfig) float64 {
	L, d, V := float64(c.Layers), float64(c.Width), float64(c.Vocab)
	return 12*L*d*d + V*d
}

// benchTrainFLOPs is the "model FLOPs" of one step of batch·T tokens: 6·N per token (forward,
// backward to activations, backward to weights: the usual convention, although the frozen base
// skips most weight gradients, so the work executed is closer to 4·N) plus 12·L·T·d per token for
// attention (QKᵀ and AV, 4·T·d forward, ×3). The same formula as hack/torch_bench.py.
func benchTrainFLOPs(c benchConfig) float64 {
	tokens := float64(c.Batch * c.Context)
	return 6*benchParams(c)*tokens + 12*float64(c.Layers)*float64(c.Context)*float64(c.Width)*tokens
}

// benchSampleFLOPs is the "model FLOPs" of one batched generation: per generated token, 2·N for
// the forward pass that produced its logits plus 4·L·d·t for attention over the t positions
// that pass attends to (t = prompt+i for the i-th new token, i = 0..gen-1). The prefill of the
// other prompt tokens is timed but not counted. The same formula as hack/torch_bench.py.
func benchSampleFLOPs(c benchConfig, prompt, gen int) float64 {
	P, G := float64(prompt), float64(gen)
	attended := G*P + G*(G-1)/2
	return float64(c.Batch) * (2*benchParams(c)*G + 4*float64(c.Layers)*float64(c.Width)*attended)
}

// benchTrain times the train stage's step: Trainer.Step (forward + backward) on a DPO batch
// against fixed reference log-probs, then AdamW (with its global gradient-norm clipping at 1.0)
// on the adapter in place, as pipeline.(*Env).Train does.
func benchTrain(r *benchResult, f benchFlags, cfg model.Config, base *model.Weights, prec model.Precision, log io.Writer) error {
	c := f.cfg
	P, T := c.Batch/2, c.Context
	rng := rand.New(rand.NewPCG(f.seed, 3))
	prompts, chosen, rejected := make([][]int, P), make([][]int, P), make([][]int, P)
	for i := range P {
		prompts[i] = benchTokens(rng, T/2, c.Vocab)
		chosen[i] = benchTokens(rng, T-T/2, c.Vocab)
		rejected[i] = benchTokens(rng, T-T/2, c.Vocab)
	}
	batch, err := model.PairBatch(prompts, chosen, rejected)
	if err != nil {
		return err
	}
	// pipeline's Run.objective() for loss dpo, beta 0.1.
	obj := model.Objective{
		Loss: func(pc, pr, rc, rr *gorgonia.Node) (*gorgonia.Node, error) {
			return loss.Node(loss.DPO, 0.1, pc, pr, rc, rr)
		},
		Precision: prec,
	}
	tr, err := model.NewTrainer(base, c.Rank, c.Batch, T, obj)
	if err != nil {
		return err
	}
	ref, _, err := tr.LogProbs(nil, batch) // the base model as the reference
	if err != nil {
		return err
	}
	adapter := model.NewAdapter(cfg, c.Rank, f.alpha, int64(f.seed)+1)
	opt, err := optim.New(optim.DefaultConfig(5e-5, 1<<30)) // clipping at 1.0, linear decay
	if err != nil {
		return err
	}
	params, grads := map[string][]float64{}, map[string][]float64{}
	for name, t := range adapter.Tensors {
		params[name] = t.Data // the optimizer updates the adapter in place
	}
	times, err := benchLoop("train", f.seconds, 1, log, func() error {
		out, err := tr.Step(adapter, batch, ref)
		if err != nil {
			return err
		}
		for name, g := range out.Grads {
			grads[name] = g.Data
		}
		opt.Step(params, grads)
		return nil
	})
	if err != nil {
		return err
	}
	r.fill(times, float64(c.Batch*T), benchTrainFLOPs(c))
	return nil
}

// benchSample times sample.Generate (temperature 1, no top-k/top-p) of --batch rows with the KV
// cache of model.Inference. The sampler's EOT is -1, its documented "never stop" value, so every
// row generates exactly context/2 tokens (the last one fills the context and is not fed back).
func benchSample(r *benchResult, f benchFlags, base *model.Weights, prec model.Precision, log io.Writer) error {
	c := f.cfg
	prompt, gen := c.Context/2, c.Context-c.Context/2
	inf := model.NewInferenceAt(base, prec)
	r.Precision = string(inf.Precision())
	rng := rand.New(rand.NewPCG(f.seed, 5))
	prompts := make([][]int, c.Batch)
	for i := range prompts {
		prompts[i] = benchTokens(rng, prompt, c.Vocab)
	}
	call := uint64(0)
	times, err := benchLoop("sample", f.seconds, 1, log, func() error {
		call++
		out, err := sample.Generate(inf, prompts, sample.Options{Temperature: 1, MaxNewTokens: gen, EOT: -1, Seed: f.seed + call})
		if err != nil {
			return err
		}
		for i, o := range out {
			if len(o) != gen {
				return fmt.Errorf("row %d generated %d tokens, want %d", i, len(o), gen)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	r.fill(times, float64(c.Batch*gen), benchSampleFLOPs(c, prompt, gen))
	return nil
}

func benchTokens(rng *rand.Rand, n, vocab int) []int {
	t := make([]int, n)
	for i := range t {
		t[i] = rng.IntN(vocab)
	}
	return t
}

// benchLoop runs warmup untimed steps, then timed steps until seconds have passed and at least
// 3 steps were taken; it returns the step times.
func benchLoop(what string, seconds float64, warmup int, log io.Writer, step func() error) ([]time.Duration, error) {
	for range warmup {
		t0 := time.Now()
		if err := step(); err != nil {
			return nil, err
		}
		fmt.Fprintf(log, "bench: %s warm-up step %.1f ms\n", what, float64(time.Since(t0).Microseconds())/1e3)
	}
	budget := time.Duration(seconds * float64(time.Second))
	var times []time.Duration
	start, lastLog := time.Now(), time.Now()
	for len(times) < 3 || time.Since(start) < budget {
		t0 := time.Now()
		if err := step(); err != nil {
			return nil, err
		}
		times = append(times, time.Since(t0))
		if time.Since(lastLog) > 5*time.Second {
			lastLog = time.Now()
			fmt.Fprintf(log, "bench: %s %d steps, last %.1f ms\n", what, len(times), float64(times[len(times)-1].Microseconds())/1e3)
		}
	}
	return times, nil
}

// fill sets the rates from the step times: median and best.
func (r *benchResult) fill(times []time.Duration, tokens, flops float64) {
	s := slices.Clone(times)
	slices.Sort(s)
	med := s[len(s)/2].Seconds()
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1].Seconds() + s[len(s)/2].Seconds()) / 2
	}
	best := max(s[0].Seconds(), 1e-9)
	med = max(med, 1e-9)
	r.Steps = len(s)
	r.StepMS, r.StepMSBest = med*1e3, best*1e3
	r.TokensPerS, r.TokensPerSBest = tokens/med, tokens/best
	r.GFLOPs, r.GFLOPsBest = flops/med/1e9, flops/best/1e9
}

func printBenchTable(out io.Writer, results []benchResult) error {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "what\tconfig\ttok/s\ttok/s best\tstep ms\tGFLOP/s\tthreads\tprecision\tbackend")
	for _, r := range results {
		cfg := "-"
		if c := r.Config; c != nil {
			cfg = fmt.Sprintf("d%d L%d H%d T%d V%d B%d r%d", c.Width, c.Layers, c.Heads, c.Context, c.Vocab, c.Batch, c.Rank)
		}
		num := func(v float64, f string) string {
			if v == 0 {
				return "-"
			}
			return fmt.Sprintf(f, v)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%.2f\t%d\t%s\t%s %s\n", r.What, cfg, num(r.TokensPerS, "%.0f"), num(r.TokensPerSBest, "%.0f"),
			num(r.StepMS, "%.1f"), r.GFLOPs, r.Threads, cmp.Or(r.Precision, "-"), r.Backend, r.Core)
	}
	return tw.Flush()
}
