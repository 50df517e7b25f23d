package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/bpo-dev/bpo/pipeline"
	"github.com/bpo-dev/bpo/trainer/model"
	"github.com/bpo-dev/bpo/trainer/tokenizer"
)

// scoreLine is one input line of bpo score. Reference is read as the response, so that the task's
// validation.jsonl and eval.jsonl ({prompt, reference}) are scored as they are.
type scoreLine struct {
	Prompt    string `json:"prompt"`
	Response  string `json:"response"`
	Reference string `json:"reference,omitempty"`
}

// scoreOut is one output line: the response's log-probability given the prompt.
type scoreOut struct {
	Prompt   string  `json:"prompt"`
	Response string  `json:"response"`
	Sum      float64 `json:"logp_sum"`
	Mean     float64 `json:"logp_mean"`
	Tokens   int     `json:"tokens"`
}

// scoreCmd prints response log-probs so anyone can check our numerics against another
// implementation (e.g. Hugging Face transformers on the same checkpoint).
func scoreCmd() *cobra.Command {
	var dir, data, adapter, precision string
	var eot bool
	c := &cobra.Command{
		Use:   "score --model DIR --data FILE.jsonl",
		Short: "Print summed and mean response log-probs for {prompt, response} lines",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			prec, err := model.ParsePrecision(precision)
			if err != nil {
				return fmt.Errorf("--precision: %w", err)
			}
			w, err := model.LoadWeights(dir)
			if err != nil {
				return err
			}
			if adapter != "" {
				a, err := model.LoadAdapterFor(adapter, w.Config)
				if err != nil {
					return err
				}
				w = model.MergeMean(w, []*model.Adapter{a})
			}
			tok, err := tokenizer.FromDir(dir)
			if err != nil {
				return err
			}
			lines, err := pipeline.ReadJSONL[scoreLine](data)
			if err != nil {
				return err
			}
			inf := model.NewInferenceAt(w, prec)
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetEscapeHTML(false)
			var total scoreTotal
			for n, in := range lines {
				if in.Reference != "" {
					if in.Response != "" {
						return fmt.Errorf("%s: record %d: set response or reference, not both", data, n+1)
					}
					in.Response = in.Reference
				}
				p, r := tok.Encode(in.Prompt), tok.Encode(in.Response)
				if len(p) == 0 {
					return fmt.Errorf("%s: record %d: empty prompt (the first response token needs a context)", data, n+1)
				}
				if eot {
					r = append(r, tok.EOT())
				}
				sums, counts, err := inf.SequenceLogProbs([][]int{p}, [][]int{r})
				if err != nil {
					return fmt.Errorf("%s: record %d: %v", data, n+1, err)
				}
				out := scoreOut{Prompt: in.Prompt, Response: in.Response, Sum: sums[0], Tokens: counts[0]}
				if counts[0] > 0 {
					out.Mean = sums[0] / float64(counts[0])
				}
				if err := enc.Encode(out); err != nil {
					return err
				}
				total.add(out)
			}
			fmt.Fprintln(cmd.ErrOrStderr(), total)
			return nil
		},
	}
	c.Flags().StringVar(&dir, "model", "", "model folder (config.json, model.safetensors, tokenizer files)")
	c.Flags().StringVar(&data, "data", "", "JSON lines with prompt and response")
	c.Flags().StringVar(&adapter, "adapter", "", "optional LoRA adapter (.safetensors) applied to the model")
	c.Flags().BoolVar(&eot, "eot", false, "append the end-of-text token to each response")
	c.Flags().StringVar(&precision, "precision", string(model.Float32), "arithmetic precision: float32 or float64")
	_ = c.MarkFlagRequired("model")
	_ = c.MarkFlagRequired("data")
	return c
}

// scoreTotal sums the scored responses: the cross-entropy per byte of response text (an
// end-of-text added by --eot is predicted but has no byte) is the tokenizer-independent number to
// compare models by, as pretraining's held-out loss is.
type scoreTotal struct {
	responses, tokens, bytes int
	nll                      float64
}

func (t *scoreTotal) add(o scoreOut) {
	t.responses++
	t.tokens += o.Tokens
	t.bytes += len(o.Response)
	t.nll -= o.Sum
}

func (t scoreTotal) String() string {
	s := fmt.Sprintf("score: %d responses, %d tokens, %d bytes", t.responses, t.tokens, t.bytes)
	if t.bytes > 0 && t.tokens > 0 {
		s += fmt.Sprintf(": %.4f nats/byte, %.4f nats/token", t.nll/float64(t.bytes), t.nll/float64(t.tokens))
	}
	return s
}
