package annotatortest

import (
	"cmp"
	"encoding/json"
	"net/http"
	"strings"
	"time"
)

// OpenRLHF is a reward server in the shape of OpenRLHF's remote reward model server
// (openrlhf.cli.serve_rm, POST /get_reward): {"query": ["prompt+response", ...]} ->
// {"rewards": [r, ...]}, one reward per query, here Score of the whole query. The real server
// reports no token usage.
type OpenRLHF struct {
	Common
	Score func(text string) float64 // default Sentiment()
}

func (s *OpenRLHF) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer s.end()
	body, _, ok := s.begin(w, r)
	if !ok {
		return
	}
	var req struct {
		Query []string `json:"query"`
	}
	if err := json.Unmarshal(body, &req); err != nil || req.Query == nil {
		writeError(w, http.StatusBadRequest, `want {"query": [text, ...]}`)
		return
	}
	score := s.Score
	if score == nil {
		score = sentiment()
	}
	rewards := make([]float64, len(req.Query))
	for i, q := range req.Query {
		rewards[i] = score(q)
	}
	writeJSON(w, http.StatusOK, map[string]any{"rewards": rewards})
}

// VLLMPooling is a reward server in the shape of vLLM's Pooling API (POST /pooling) for reward
// models: {"model": m, "input": text or [text, ...], "task": optional} -> {"object": "list",
// "data": [{"index": i, "object": "pooling", "data": ...}], "usage": {"prompt_tokens": n, ...}}.
// A sequence reward model (pooling task "classify" with one label) gives each text's data as
// [reward]; with TokenWise (task "token_classify", as a token reward model) it is one [value]
// per word, the reward the last. Score rates the whole input.
type VLLMPooling struct {
	Common
	Score     func(text string) float64 // default Sentiment()
	TokenWise bool
	// Model, if set, is the only model name accepted (else 404, as vLLM answers).
	Model string
}

func (s *VLLMPooling) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer s.end()
	body, _, ok := s.begin(w, r)
	if !ok {
		return
	}
	if !strings.HasSuffix(r.URL.Path, "/pooling") {
		writeError(w, http.StatusNotFound, "no route "+r.URL.Path)
		return
	}
	var req struct {
		Model string          `json:"model"`
		Input json.RawMessage `json:"input"`
		Task  string          `json:"task"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if s.Model != "" && req.Model != "" && req.Model != s.Model {
		writeError(w, http.StatusNotFound, "The model `"+req.Model+"` does not exist.")
		return
	}
	var inputs []string
	if json.Unmarshal(req.Input, &inputs) != nil {
		var one string
		if err := json.Unmarshal(req.Input, &one); err != nil {
			writeError(w, http.StatusBadRequest, "input: want a string or a list of strings")
			return
		}
		inputs = []string{one}
	}
	score := s.Score
	if score == nil {
		score = sentiment()
	}
	data := make([]any, len(inputs))
	var tokens int64
	for i, in := range inputs {
		reward := score(in)
		n := max(1, words(in))
		tokens += n
		var d any = []float64{reward}
		if s.TokenWise {
			rows := make([][]float64, n)
			for k := range rows {
				rows[k] = []float64{0.01 * float64(k)} // per-token values before the last
			}
			rows[n-1] = []float64{reward}
			d = rows
		}
		data[i] = map[string]any{"index": i, "object": "pooling", "data": d}
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"id":      "pool-test",
		"object":  "list",
		"created": time.Now().Unix(),
		"model":   cmp.Or(req.Model, s.Model),
		"data":    data,
		"usage":   map[string]any{"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0},
	})
}
