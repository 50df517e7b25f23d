// Package serve is an OpenAI-compatible HTTP server for a GPT-2 model folder (the Hugging Face
// layout the trainer loads) and LoRA adapters on it: GET /v1/models, POST /v1/completions,
// vLLM's runtime adapter API (POST /v1/load_lora_adapter, /v1/unload_lora_adapter), /health and
// Prometheus /metrics. Generation runs on trainer/model's inference path and trainer/sample's
// sampling rules, batched across concurrent requests (engine.go). docs/serve.md is the guide.
package serve

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/bpo-dev/bpo/trainer/model"
	"github.com/bpo-dev/bpo/trainer/tokenizer"
)

// Defaults of Options.
const (
	DefaultMaxBatch = 16
	DefaultMaxQueue = 64
)

// Options configure a Server.
type Options struct {
	// ModelDir is the model folder: config.json, model.safetensors and the tokenizer's files.
	ModelDir string
	// Name is the base model's name in the API (default: the folder's base name).
	Name string
	// Precision of the forward pass (default float32).
	Precision model.Precision
	// MaxBatch is the number of rows (choices) one model decodes together (default 16).
	MaxBatch int
	// MaxQueue bounds the completion requests waiting for a batch slot, over all models; one
	// more is answered 429 (default 64).
	MaxQueue int
	// RuntimeLoRA enables POST /v1/load_lora_adapter and /v1/unload_lora_adapter (they read
	// any path the server can read, so they are off unless asked for, as in vLLM).
	RuntimeLoRA bool
	// LoRA adapters loaded by Load, name -> path (a PEFT folder or a trainer adapter file).
	LoRA map[string]string
}

// Server serves one base model and its adapters. Create it with New, then Load (until Load
// returns, /health and the API answer 503 not_ready), serve Handler, and Shutdown.
type Server struct {
	opts    Options
	metrics *metrics
	created int64

	// Set by Load, read-only afterwards.
	base *model.Weights
	tok  tokenizer.Tokenizer

	mu       sync.Mutex
	engines  map[string]*engine
	queued   int  // requests waiting over all engines
	ready    bool // Load finished
	draining bool // Shutdown began
	inflight sync.WaitGroup

	// beforeStep, when set (tests), runs before every decode step of every engine.
	beforeStep func()
}

// New checks the options; it loads nothing (see Load).
func New(opts Options) (*Server, error) {
	if opts.ModelDir == "" {
		return nil, errors.New("serve: --model is required: a model folder with config.json and model.safetensors")
	}
	if opts.Name == "" {
		opts.Name = filepath.Base(filepath.Clean(opts.ModelDir))
	}
	if opts.MaxBatch == 0 {
		opts.MaxBatch = DefaultMaxBatch
	}
	if opts.MaxQueue == 0 {
		opts.MaxQueue = DefaultMaxQueue
	}
	switch {
	case opts.MaxBatch < 1:
		return nil, fmt.Errorf("serve: --max-batch must be >= 1, got %d", opts.MaxBatch)
	case opts.MaxQueue < 1:
		return nil, fmt.Errorf("serve: --max-queue must be >= 1, got %d", opts.MaxQueue)
	}
	if err := opts.Precision.Validate(); err != nil {
		return nil, fmt.Errorf("serve: --precision: %w", err)
	}
	for name := range opts.LoRA {
		if name == opts.Name {
			return nil, fmt.Errorf("serve: --lora %s: the name is the base model's; choose another", name)
		}
	}
	return &Server{opts: opts, metrics: newMetrics(), created: time.Now().Unix(), engines: map[string]*engine{}}, nil
}

// Load reads the base model, its tokenizer and the adapters of Options.LoRA, then marks the
// server ready.
func (s *Server) Load() error {
	w, err := model.LoadWeights(s.opts.ModelDir)
	if err != nil {
		return fmt.Errorf("serve: --model: %w", err)
	}
	tok, err := tokenizer.FromDir(s.opts.ModelDir)
	if err != nil {
		return fmt.Errorf("serve: --model tokenizer: %w", err)
	}
	if tok.VocabSize() > w.Config.VocabSize {
		return fmt.Errorf("serve: --model: the tokenizer has %d tokens but the model's vocab_size is %d", tok.VocabSize(), w.Config.VocabSize)
	}
	s.base, s.tok = w, tok
	inf := model.NewInferenceAt(w, s.opts.Precision)
	s.mu.Lock()
	s.engines[s.opts.Name] = newEngine(s, s.opts.Name, inf, s.opts.ModelDir, "")
	s.mu.Unlock()
	names := make([]string, 0, len(s.opts.LoRA))
	for n := range s.opts.LoRA {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if e := s.loadAdapter(n, s.opts.LoRA[n]); e != nil {
			return fmt.Errorf("serve: --lora %s=%s: %s", n, s.opts.LoRA[n], e.Message)
		}
	}
	s.mu.Lock()
	s.ready = true
	s.mu.Unlock()
	return nil
}

// Name is the base model's name in the API.
func (s *Server) Name() string { return s.opts.Name }

// Handler routes the API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	m := s.metrics
	mux.HandleFunc("GET /health", m.instrument("health", s.handleHealth))
	mux.Handle("GET /metrics", m.handler())
	mux.HandleFunc("GET /v1/models", m.instrument("models", s.whenReady(s.handleModels)))
	mux.HandleFunc("POST /v1/completions", m.instrument("completions", s.whenReady(s.handleCompletions)))
	mux.HandleFunc("POST /v1/load_lora_adapter", m.instrument("load_lora_adapter", s.whenReady(s.handleLoadAdapter)))
	mux.HandleFunc("POST /v1/unload_lora_adapter", m.instrument("unload_lora_adapter", s.whenReady(s.handleUnloadAdapter)))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, notFound("", "unknown_url", "no endpoint %s %s: this server has GET /v1/models, POST /v1/completions, POST /v1/load_lora_adapter, POST /v1/unload_lora_adapter, GET /health and GET /metrics", r.Method, r.URL.Path))
	})
	return mux
}

// state returns the server's availability as a 503 to send, or nil when it serves.
func (s *Server) state() *apiError {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.draining:
		return errUnavailable("shutting_down", "the server is shutting down: send the request to another replica or retry later")
	case !s.ready:
		return errUnavailable("not_ready", "the server is still loading its model: retry shortly")
	}
	return nil
}

func (s *Server) whenReady(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if e := s.state(); e != nil {
			writeError(w, e)
			return
		}
		h(w, r)
	}
}

// handleHealth answers 200 while the server takes requests and 503 (with the reason) while it
// loads or shuts down, so that a readiness probe routes traffic only to a serving replica.
func (s *Server) handleHealth(w http.ResponseWriter, _ *http.Request) {
	if e := s.state(); e != nil {
		writeError(w, e)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// Shutdown stops taking requests (they get 503 shutting_down), waits for those accepted to
// finish or for ctx, then stops the engines. Close the HTTP server after it returns.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.draining = true
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.inflight.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("serve: shutdown: %w with requests still running", ctx.Err())
	}
	s.mu.Lock()
	for name, e := range s.engines {
		e.closing = true
		e.poke()
		delete(s.engines, name)
	}
	s.mu.Unlock()
	return err
}

// enqueue admits a job to an engine's queue, or says why not: 503 while shutting down, 404 if
// the engine was unloaded meanwhile, 429 when the queue is full.
func (s *Server) enqueue(e *engine, j *job) *apiError {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.draining:
		return errUnavailable("shutting_down", "the server is shutting down: send the request to another replica or retry later")
	case e.closing:
		return modelNotFound(e.name)
	case s.queued >= s.opts.MaxQueue:
		return errQueueFull(s.opts.MaxQueue)
	}
	s.queued++
	s.metrics.queued.Set(float64(s.queued))
	s.inflight.Add(1)
	e.pending = append(e.pending, j)
	e.poke()
	return nil
}

// engineFor finds a served model by name.
func (s *Server) engineFor(name string) (*engine, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.engines[name]; ok {
		return e, nil
	}
	return nil, modelNotFound(name)
}

func modelNotFound(name string) *apiError {
	return notFound("model", "model_not_found", "the model %q does not exist: GET /v1/models lists the base model and the loaded adapters", name)
}
