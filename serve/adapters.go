package serve

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"sort"

	"github.com/bpo-dev/bpo/trainer/model"
)

// readAdapter reads a LoRA adapter for cfg from a PEFT folder (adapter_config.json +
// adapter_model.safetensors, as model.SavePEFT and PEFT write) or from a trainer adapter file
// (h.N.<target>.lora_A|lora_B with rank and alpha in __metadata__, as the workspace keeps
// members).
func readAdapter(path string, cfg model.Config) (*model.Adapter, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		return model.LoadPEFT(path, cfg)
	}
	return model.LoadAdapterFor(path, cfg)
}

// loadAdapter reads an adapter and serves it under name as its own dense merged weights
// (base + delta, model.MergeMean): exact, and as fast per token as the base model, at the memory
// of one more model copy.
func (s *Server) loadAdapter(name, path string) *apiError {
	if e := s.checkNewName(name); e != nil {
		return e
	}
	a, err := readAdapter(path, s.base.Config)
	if errors.Is(err, fs.ErrNotExist) {
		return notFound("lora_path", "adapter_not_found", "lora_path: no adapter found: %v", err)
	}
	if err != nil {
		return badRequest("lora_path", "lora_path: %v", err)
	}
	inf := model.NewInferenceAt(model.MergeMean(s.base, []*model.Adapter{a}), s.opts.Precision)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, taken := s.engines[name]; taken { // loaded concurrently meanwhile
		return adapterExists(name)
	}
	s.engines[name] = newEngine(s, name, inf, path, s.opts.Name)
	s.metrics.adapters.Set(float64(len(s.engines) - 1))
	return nil
}

func (s *Server) checkNewName(name string) *apiError {
	if name == "" {
		return badRequest("lora_name", "both lora_name and lora_path must be provided")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, taken := s.engines[name]; taken {
		return adapterExists(name)
	}
	return nil
}

func adapterExists(name string) *apiError {
	return badRequest("lora_name", "the lora adapter %q has already been loaded (or is the base model's name): unload it first or choose another name", name)
}

// unloadAdapter stops serving an adapter: new requests for it get 404, those accepted finish.
func (s *Server) unloadAdapter(name string) *apiError {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.engines[name]
	if !ok || e.parent == "" {
		if ok {
			return badRequest("lora_name", "%q is the base model, not an adapter: it cannot be unloaded", name)
		}
		return notFound("lora_name", "adapter_not_found", "the lora adapter %q cannot be found: GET /v1/models lists the loaded adapters", name)
	}
	delete(s.engines, name)
	e.closing = true
	e.poke()
	s.metrics.adapters.Set(float64(len(s.engines) - 1))
	return nil
}

// adapterRequest is vLLM's LoadLoRAAdapterRequest / UnloadLoRAAdapterRequest.
type adapterRequest struct {
	LoraName string `json:"lora_name"`
	LoraPath string `json:"lora_path"`
}

func (s *Server) readAdapterRequest(w http.ResponseWriter, r *http.Request) (*adapterRequest, *apiError) {
	if !s.opts.RuntimeLoRA {
		return nil, notFound("", "runtime_lora_disabled", "runtime LoRA loading is disabled: start bpo serve with --enable-runtime-lora, or load adapters at start with --lora NAME=PATH")
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		return nil, badRequest("", "reading the request body: %v", err)
	}
	var req adapterRequest
	if e := decodeJSON(body, &req); e != nil {
		return nil, e
	}
	return &req, nil
}

// handleLoadAdapter is vLLM's POST /v1/load_lora_adapter: 200 with a plain-text success line, or
// a 400 error (missing field, name taken, unreadable adapter).
func (s *Server) handleLoadAdapter(w http.ResponseWriter, r *http.Request) {
	req, e := s.readAdapterRequest(w, r)
	if e == nil && (req.LoraName == "" || req.LoraPath == "") {
		param := "lora_name"
		if req.LoraName != "" {
			param = "lora_path"
		}
		e = badRequest(param, "both lora_name and lora_path must be provided")
	}
	if e == nil {
		e = s.loadAdapter(req.LoraName, req.LoraPath)
	}
	if e != nil {
		writeError(w, e)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "Success: LoRA adapter '%s' added successfully.", req.LoraName)
}

// handleUnloadAdapter is vLLM's POST /v1/unload_lora_adapter: 200 with a plain-text success
// line, 404 for an adapter that is not loaded.
func (s *Server) handleUnloadAdapter(w http.ResponseWriter, r *http.Request) {
	req, e := s.readAdapterRequest(w, r)
	if e == nil && req.LoraName == "" {
		e = badRequest("lora_name", "lora_name must be provided")
	}
	if e == nil {
		e = s.unloadAdapter(req.LoraName)
	}
	if e != nil {
		writeError(w, e)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "Success: LoRA adapter '%s' removed successfully.", req.LoraName)
}

// modelCard is one entry of GET /v1/models: OpenAI's Model plus vLLM's root, parent and
// max_model_len.
type modelCard struct {
	ID          string  `json:"id"`
	Object      string  `json:"object"`
	Created     int64   `json:"created"`
	OwnedBy     string  `json:"owned_by"`
	Root        string  `json:"root"`
	Parent      *string `json:"parent"`
	MaxModelLen int     `json:"max_model_len"`
}

// handleModels lists the base model first, then the adapters by name.
func (s *Server) handleModels(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	cards := make([]modelCard, 0, len(s.engines))
	for _, e := range s.engines {
		cards = append(cards, modelCard{ID: e.name, Object: "model", Created: s.created, OwnedBy: "bpo",
			Root: e.root, Parent: strPtr(e.parent), MaxModelLen: s.base.Config.NPositions})
	}
	s.mu.Unlock()
	sort.Slice(cards, func(i, j int) bool {
		if (cards[i].Parent == nil) != (cards[j].Parent == nil) {
			return cards[i].Parent == nil
		}
		return cards[i].ID < cards[j].ID
	})
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": cards})
}
