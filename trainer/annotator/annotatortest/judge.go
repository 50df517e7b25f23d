package annotatortest

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// Judge is an OpenAI-compatible chat-completions judge (POST .../chat/completions) that decides
// by a rule, not a model: of the two responses in the prompt (by default the <A> and <B> blocks
// of annotator.DefaultJudgeTemplate) it prefers the one Score rates higher, and answers "tie" on
// equal scores. A request with response_format gets the JSON {"verdict": ...}; one without gets
// the bare word. Usage counts words as tokens. The zero Judge is ready; set fields before use.
type Judge struct {
	Common
	// Score rates a response (default Sentiment()).
	Score func(text string) float64
	// Extract finds the two responses in the prompt (default: the <A> and <B> blocks).
	Extract func(prompt string) (a, b string, ok bool)
	// FollowPosition makes the judge always answer "A": its verdicts flip with the order.
	FollowPosition bool
	// RejectResponseFormat answers 400 to a request that carries response_format, like a
	// server without structured outputs.
	RejectResponseFormat bool

	structured atomic.Int64
}

// StructuredRequests is the number of requests that carried a response_format.
func (j *Judge) StructuredRequests() int64 { return j.structured.Load() }

// ExtractTagged finds the <A> and <B> blocks of annotator.DefaultJudgeTemplate.
func ExtractTagged(prompt string) (a, b string, ok bool) {
	block := func(tag string) (string, bool) {
		_, rest, ok := strings.Cut(prompt, "\n<"+tag+">\n")
		if !ok {
			return "", false
		}
		i := strings.LastIndex(rest, "\n</"+tag+">")
		if i < 0 {
			return "", false
		}
		return rest[:i], true
	}
	a, okA := block("A")
	b, okB := block("B")
	return a, b, okA && okB
}

type chatRequest struct {
	Model    string `json:"model"`
	Messages []struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	} `json:"messages"`
	ResponseFormat *struct {
		Type string `json:"type"`
	} `json:"response_format"`
}

func (j *Judge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer j.end()
	body, fault, ok := j.begin(w, r)
	if !ok {
		return
	}
	if !strings.HasSuffix(r.URL.Path, "/chat/completions") {
		writeError(w, http.StatusNotFound, "no route "+r.URL.Path)
		return
	}
	var req chatRequest
	if err := json.Unmarshal(body, &req); err != nil || req.Model == "" || len(req.Messages) == 0 {
		writeError(w, http.StatusBadRequest, "want a chat completion request with a model and messages")
		return
	}
	structured := req.ResponseFormat != nil
	if structured {
		j.structured.Add(1)
		if j.RejectResponseFormat {
			writeError(w, http.StatusBadRequest, "response_format is not supported")
			return
		}
		if t := req.ResponseFormat.Type; t != "json_schema" && t != "json_object" {
			writeError(w, http.StatusBadRequest, "unknown response_format type "+t)
			return
		}
	}
	prompt := req.Messages[len(req.Messages)-1].Content
	answer := fault.Answer
	if answer == "" {
		extract := j.Extract
		if extract == nil {
			extract = ExtractTagged
		}
		a, b, ok := extract(prompt)
		if !ok {
			writeError(w, http.StatusBadRequest, "the prompt holds no <A> and <B> blocks")
			return
		}
		v := j.decide(a, b)
		answer = v
		if structured {
			out, _ := json.Marshal(map[string]string{"verdict": v})
			answer = string(out)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"id":      "chatcmpl-test",
		"object":  "chat.completion",
		"created": time.Now().Unix(),
		"model":   req.Model,
		"choices": []any{map[string]any{
			"index":         0,
			"message":       map[string]any{"role": "assistant", "content": answer},
			"finish_reason": "stop",
		}},
		"usage": map[string]any{
			"prompt_tokens":     words(prompt),
			"completion_tokens": max(1, words(answer)),
			"total_tokens":      words(prompt) + max(1, words(answer)),
		},
	})
}

func (j *Judge) decide(a, b string) string {
	if j.FollowPosition {
		return "A"
	}
	score := j.Score
	if score == nil {
		score = sentiment()
	}
	switch sa, sb := score(a), score(b); {
	case sa > sb:
		return "A"
	case sa < sb:
		return "B"
	}
	return "tie"
}
