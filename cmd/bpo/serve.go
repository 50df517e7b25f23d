package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/bpo-dev/bpo/serve"
	"github.com/bpo-dev/bpo/trainer/model"
)

// serveCmd runs the OpenAI-compatible server (docs/serve.md).
func serveCmd() *cobra.Command {
	var opts serve.Options
	var addr, precision string
	var loras []string
	var drain time.Duration
	c := &cobra.Command{
		Use:   "serve --model DIR [--addr HOST:PORT]",
		Short: "Serve a model folder and LoRA adapters over an OpenAI-compatible HTTP API",
		Long: `Serve a model folder (config.json, model.safetensors, tokenizer files: what the trainer loads)
over an OpenAI-compatible API: GET /v1/models, POST /v1/completions, vLLM's POST
/v1/load_lora_adapter and /v1/unload_lora_adapter (with --enable-runtime-lora), GET /health and
GET /metrics. Concurrent requests are batched per model. See docs/serve.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := model.ParsePrecision(precision)
			if err != nil {
				return fmt.Errorf("--precision: %w", err)
			}
			opts.Precision = p
			if opts.LoRA, err = serve.ParseLoRAModules(loras); err != nil {
				return err
			}
			s, err := serve.New(opts)
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("--addr: %w", err)
			}
			hs := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
			served := make(chan error, 1)
			go func() { served <- hs.Serve(ln) }()
			// Listening before loading: /health answers 503 not_ready until the model is in memory.
			out := cmd.ErrOrStderr()
			fmt.Fprintf(out, "bpo serve: listening on http://%s, loading %s (%s)\n", ln.Addr(), opts.ModelDir, engineLine())
			if err := s.Load(); err != nil {
				_ = hs.Close()
				return err
			}
			fmt.Fprintf(out, "bpo serve: ready: model %q, %d adapter(s), max batch %d rows, queue %d requests\n",
				s.Name(), len(opts.LoRA), opts.MaxBatch, opts.MaxQueue)
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			select {
			case err := <-served:
				return err
			case <-ctx.Done():
			}
			fmt.Fprintf(out, "bpo serve: shutting down (up to %s for running requests)\n", drain)
			sctx, cancel := context.WithTimeout(context.Background(), drain)
			defer cancel()
			serr := s.Shutdown(sctx)
			herr := hs.Shutdown(sctx)
			if errors.Is(herr, context.DeadlineExceeded) {
				herr = hs.Close()
			}
			return errors.Join(serr, herr)
		},
	}
	f := c.Flags()
	f.StringVar(&opts.ModelDir, "model", "", "model folder: config.json, model.safetensors and the tokenizer's files")
	f.StringVar(&addr, "addr", "127.0.0.1:8000", "listen address HOST:PORT (0.0.0.0:8000 to serve beyond this machine)")
	f.StringVar(&opts.Name, "served-model-name", "", "the base model's name in the API (default: the folder's name)")
	f.StringArrayVar(&loras, "lora", nil, "NAME=PATH: serve a LoRA adapter (PEFT folder or trainer adapter file) as model NAME; repeatable")
	f.BoolVar(&opts.RuntimeLoRA, "enable-runtime-lora", false, "enable POST /v1/load_lora_adapter and /v1/unload_lora_adapter (they read any path the server can)")
	f.IntVar(&opts.MaxBatch, "max-batch", serve.DefaultMaxBatch, "rows (choices) one model decodes together")
	f.IntVar(&opts.MaxQueue, "max-queue", serve.DefaultMaxQueue, "requests waiting for a batch slot before new ones get 429")
	f.StringVar(&precision, "precision", "float32", "forward pass precision: float32 or float64")
	f.DurationVar(&drain, "shutdown-timeout", 30*time.Second, "on SIGTERM, how long running requests may take to finish")
	_ = c.MarkFlagRequired("model")
	return c
}
