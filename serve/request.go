package serve

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"

	"github.com/bpo-dev/bpo/trainer/tokenizer"
)

// Limits of one completion request (OpenAI's where it has one).
const (
	maxStops     = 4   // OpenAI: up to 4 stop sequences
	maxLogprobs  = 20  // vLLM's default max_logprobs (OpenAI allows 5)
	maxChoices   = 128 // prompts × n
	maxBodyBytes = 4 << 20
)

// completionRequest is a checked POST /v1/completions body. Prompts are not yet tokenized.
type completionRequest struct {
	Model       string
	Prompts     []promptIn
	MaxTokens   int
	Temperature float64
	TopP        float64
	TopK        int // 0: no top-k filtering (vLLM's top_k; -1 means the same)
	N           int
	Seed        uint64
	HasSeed     bool
	Logprobs    int // -1: none; k >= 0: the sampled token's logprob and the k most likely
	Stop        []string
	Echo        bool
	// TokensAsIDs spells logprobs tokens "token_id:<id>" (vLLM's return_tokens_as_token_ids), so
	// that a client gets the exact token ids, which text cannot always give back.
	TokensAsIDs bool
}

// promptIn is one prompt as sent: text, or token ids.
type promptIn struct {
	Text   string
	Tokens []int // non-nil for token-id prompts
}

// completionBody is the JSON of a completion request as sent. Pointers tell absent from zero.
type completionBody struct {
	Model            *string            `json:"model"`
	Prompt           json.RawMessage    `json:"prompt"`
	MaxTokens        *int               `json:"max_tokens"`
	Temperature      *float64           `json:"temperature"`
	TopP             *float64           `json:"top_p"`
	TopK             *int               `json:"top_k"`
	TokensAsIDs      *bool              `json:"return_tokens_as_token_ids"`
	N                *int               `json:"n"`
	Seed             *int64             `json:"seed"`
	Logprobs         *int               `json:"logprobs"`
	Stop             json.RawMessage    `json:"stop"`
	Echo             *bool              `json:"echo"`
	Stream           *bool              `json:"stream"`
	BestOf           *int               `json:"best_of"`
	FrequencyPenalty *float64           `json:"frequency_penalty"`
	PresencePenalty  *float64           `json:"presence_penalty"`
	LogitBias        map[string]float64 `json:"logit_bias"`
	Suffix           *string            `json:"suffix"`
}

// decodeJSON decodes a request body into v; errors are 400s naming the field whose value has the
// wrong type.
func decodeJSON(body []byte, v any) *apiError {
	if err := json.Unmarshal(body, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return badRequest(te.Field, "%s: got a JSON %s, want %s", te.Field, te.Value, jsonKind(te.Type.Kind().String()))
		}
		return badRequest("", "the request body is not valid JSON: %v", err)
	}
	return nil
}

func jsonKind(goKind string) string {
	switch goKind {
	case "int", "int64", "float64":
		return "a number"
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "map", "struct":
		return "an object"
	case "slice":
		return "an array"
	}
	return goKind
}

// parseCompletion checks a completion request body: every field in range, unsupported options
// refused by name. Defaults are OpenAI's (max_tokens 16, temperature 1, top_p 1, n 1).
func parseCompletion(body []byte) (*completionRequest, *apiError) {
	var b completionBody
	if e := decodeJSON(body, &b); e != nil {
		return nil, e
	}
	r := &completionRequest{MaxTokens: 16, Temperature: 1, TopP: 1, N: 1, Logprobs: -1}
	switch {
	case b.Model == nil || *b.Model == "":
		return nil, badRequest("model", "model is required: the base model's name or a loaded adapter's (GET /v1/models lists them)")
	case b.Stream != nil && *b.Stream:
		return nil, badRequest("stream", "stream: streaming is not supported; send stream false or omit it")
	case b.Suffix != nil && *b.Suffix != "":
		return nil, badRequest("suffix", "suffix is not supported (no insertion mode); omit it")
	case b.FrequencyPenalty != nil && *b.FrequencyPenalty != 0:
		return nil, badRequest("frequency_penalty", "frequency_penalty is not supported; omit it or send 0")
	case b.PresencePenalty != nil && *b.PresencePenalty != 0:
		return nil, badRequest("presence_penalty", "presence_penalty is not supported; omit it or send 0")
	case len(b.LogitBias) > 0:
		return nil, badRequest("logit_bias", "logit_bias is not supported; omit it")
	}
	r.Model = *b.Model
	if b.MaxTokens != nil {
		r.MaxTokens = *b.MaxTokens
	}
	if b.Temperature != nil {
		r.Temperature = *b.Temperature
	}
	if b.TopP != nil {
		r.TopP = *b.TopP
	}
	if b.N != nil {
		r.N = *b.N
	}
	if b.TopK != nil && *b.TopK > 0 {
		r.TopK = *b.TopK
	}
	if b.TokensAsIDs != nil {
		r.TokensAsIDs = *b.TokensAsIDs
	}
	if b.Logprobs != nil {
		r.Logprobs = *b.Logprobs
	}
	if b.Echo != nil {
		r.Echo = *b.Echo
	}
	if b.Seed != nil {
		r.Seed, r.HasSeed = uint64(*b.Seed), true
	}
	switch {
	case r.MaxTokens < 0:
		return nil, badRequest("max_tokens", "max_tokens must be >= 0, got %d", r.MaxTokens)
	case !(r.Temperature >= 0 && r.Temperature <= 2):
		return nil, badRequest("temperature", "temperature must be in [0, 2] (0 is greedy), got %g", r.Temperature)
	case !(r.TopP > 0 && r.TopP <= 1):
		return nil, badRequest("top_p", "top_p must be in (0, 1], got %g", r.TopP)
	case b.TopK != nil && *b.TopK < -1:
		return nil, badRequest("top_k", "top_k must be -1 or 0 (no top-k filtering) or a positive number of tokens, got %d", *b.TopK)
	case r.N < 1:
		return nil, badRequest("n", "n must be >= 1, got %d", r.N)
	case b.BestOf != nil && *b.BestOf != r.N:
		return nil, badRequest("best_of", "best_of other than n is not supported (no ranking of candidates); omit it")
	case b.Logprobs != nil && (r.Logprobs < 0 || r.Logprobs > maxLogprobs):
		return nil, badRequest("logprobs", "logprobs must be in [0, %d], got %d", maxLogprobs, r.Logprobs)
	}
	var e *apiError
	if r.Prompts, e = parsePrompt(b.Prompt); e != nil {
		return nil, e
	}
	if len(r.Prompts)*r.N > maxChoices {
		return nil, badRequest("n", "%d prompts × n %d = %d choices, more than the %d one request may ask for", len(r.Prompts), r.N, len(r.Prompts)*r.N, maxChoices)
	}
	if r.Stop, e = parseStop(b.Stop); e != nil {
		return nil, e
	}
	return r, nil
}

// parsePrompt reads OpenAI's four prompt forms: a string, an array of strings, an array of token
// ids, an array of arrays of token ids.
func parsePrompt(raw json.RawMessage) ([]promptIn, *apiError) {
	raw = bytes.TrimSpace(raw)
	const forms = "a string, an array of strings, an array of token ids or an array of arrays of token ids"
	if len(raw) == 0 || string(raw) == "null" {
		return nil, badRequest("prompt", "prompt is required: %s", forms)
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, badRequest("prompt", "prompt: %v", err)
		}
		return []promptIn{{Text: s}}, nil
	}
	var items []json.RawMessage
	if raw[0] != '[' || json.Unmarshal(raw, &items) != nil {
		return nil, badRequest("prompt", "prompt must be %s", forms)
	}
	if len(items) == 0 {
		return nil, badRequest("prompt", "prompt is an empty array")
	}
	first := bytes.TrimSpace(items[0])
	switch {
	case len(first) > 0 && first[0] == '"':
		var ss []string
		if err := json.Unmarshal(raw, &ss); err != nil {
			return nil, badRequest("prompt", "prompt: an array must hold only strings or only token ids: %v", err)
		}
		out := make([]promptIn, len(ss))
		for i, s := range ss {
			out[i] = promptIn{Text: s}
		}
		return out, nil
	case len(first) > 0 && first[0] == '[':
		var ids [][]int
		if err := json.Unmarshal(raw, &ids); err != nil {
			return nil, badRequest("prompt", "prompt: an array of token-id arrays must hold only integers: %v", err)
		}
		out := make([]promptIn, len(ids))
		for i, t := range ids {
			out[i] = promptIn{Tokens: append([]int{}, t...)}
		}
		return out, nil
	default:
		var ids []int
		if err := json.Unmarshal(raw, &ids); err != nil {
			return nil, badRequest("prompt", "prompt: an array of token ids must hold only integers: %v", err)
		}
		return []promptIn{{Tokens: ids}}, nil
	}
}

// parseStop reads stop: absent, null, a string or an array of up to maxStops strings, none empty.
func parseStop(raw json.RawMessage) ([]string, *apiError) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var stops []string
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, badRequest("stop", "stop: %v", err)
		}
		stops = []string{s}
	} else if err := json.Unmarshal(raw, &stops); err != nil {
		return nil, badRequest("stop", "stop must be a string or an array of strings")
	}
	if len(stops) > maxStops {
		return nil, badRequest("stop", "stop has %d sequences, at most %d are allowed", len(stops), maxStops)
	}
	for i, s := range stops {
		if s == "" {
			return nil, badRequest("stop", "stop sequence %d is empty", i)
		}
	}
	return stops, nil
}

// tokenizePrompts turns the prompts into token ids and checks them against the model: ids in the
// vocabulary, at least one token, and room in the context for max_tokens more.
func tokenizePrompts(r *completionRequest, tok tokenizer.Tokenizer, vocab, contextLen int) ([][]int, *apiError) {
	out := make([][]int, len(r.Prompts))
	for i, p := range r.Prompts {
		ids := p.Tokens
		if ids == nil {
			ids = tok.Encode(p.Text)
		}
		for _, id := range ids {
			if id < 0 || id >= vocab {
				return nil, badRequest("prompt", "prompt %d: token id %d is outside the vocabulary [0, %d)", i, id, vocab)
			}
		}
		if len(ids) == 0 {
			return nil, badRequest("prompt", "prompt %d is empty: the model needs at least one token to continue", i)
		}
		if len(ids) > contextLen {
			return nil, badRequest("prompt", "prompt %d has %d tokens, more than the model's context of %d", i, len(ids), contextLen)
		}
		if len(ids)+r.MaxTokens > contextLen {
			return nil, badRequest("max_tokens", "this model's maximum context length is %d tokens, but prompt %d has %d tokens and max_tokens is %d: lower max_tokens to at most %d",
				contextLen, i, len(ids), r.MaxTokens, contextLen-len(ids))
		}
		out[i] = ids
	}
	return out, nil
}

// promptText is the text echo returns for a prompt: as sent, or decoded from its ids.
func promptText(p promptIn, tok tokenizer.Tokenizer) string {
	if p.Tokens == nil {
		return p.Text
	}
	return tok.Decode(p.Tokens)
}

// firstStop returns the index of the earliest stop sequence in text at or after from, or -1.
func firstStop(text string, stops []string, from int) int {
	best := -1
	for _, s := range stops {
		lo := max(0, from-len(s)+1)
		if lo > len(text) {
			continue
		}
		if i := strings.Index(text[lo:], s); i >= 0 && (best < 0 || lo+i < best) {
			best = lo + i
		}
	}
	return best
}
