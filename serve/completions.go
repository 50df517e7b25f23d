package serve

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/bpo-dev/bpo/trainer/model/kernels"
)

// completion is the legacy completions response (OpenAI's Completion object).
type completion struct {
	ID      string   `json:"id"`
	Object  string   `json:"object"`
	Created int64    `json:"created"`
	Model   string   `json:"model"`
	Choices []choice `json:"choices"`
	Usage   usage    `json:"usage"`
}

type choice struct {
	Text         string    `json:"text"`
	Index        int       `json:"index"`
	Logprobs     *logprobs `json:"logprobs"`
	FinishReason string    `json:"finish_reason"`
}

// logprobs is the legacy completions logprobs object: per token its text, its log-probability
// under the model (null for the first echoed prompt token, which has no context), the most
// likely tokens at that position (with the token itself) and its offset in the choice's text.
type logprobs struct {
	Tokens        []string             `json:"tokens"`
	TokenLogprobs []*float64           `json:"token_logprobs"`
	TopLogprobs   []map[string]float64 `json:"top_logprobs"`
	TextOffset    []int                `json:"text_offset"`
}

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

func randomUint64() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:])
}

func (s *Server) handleCompletions(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		writeError(w, badRequest("", "reading the request body: %v", err))
		return
	}
	req, e := parseCompletion(body)
	if e != nil {
		writeError(w, e)
		return
	}
	eng, e := s.engineFor(req.Model)
	if e != nil {
		writeError(w, e)
		return
	}
	cfg := s.base.Config
	prompts, e := tokenizePrompts(req, s.tok, cfg.VocabSize, cfg.NPositions)
	if e != nil {
		writeError(w, e)
		return
	}
	seed := req.Seed
	if !req.HasSeed {
		seed = randomUint64()
	}
	opts := decodeOptions{temperature: req.Temperature, topP: req.TopP, topK: req.TopK, maxTokens: req.MaxTokens,
		eot: s.tok.EOT(), stops: req.Stop, logprobs: req.Logprobs}
	j := &job{ctx: r.Context(), opts: opts, done: make(chan struct{})}
	for p, prompt := range prompts {
		for k := 0; k < req.N; k++ {
			j.rows = append(j.rows, &row{job: j, prompt: prompt, rng: rowRand(opts, seed, p*req.N+k)})
		}
	}
	j.left = len(j.rows)
	if req.MaxTokens > 0 {
		if e := s.enqueue(eng, j); e != nil {
			writeError(w, e)
			return
		}
		for _, p := range prompts {
			s.metrics.promptTokens.Add(float64(len(p)))
		}
		<-j.done
		if j.err != nil {
			if errors.Is(j.err, r.Context().Err()) {
				return // the client has gone
			}
			writeError(w, errInternal("generation failed: %v", j.err))
			return
		}
	} else {
		for _, rw := range j.rows {
			rw.finish = "length"
		}
	}
	writeJSON(w, http.StatusOK, s.buildCompletion(req, eng, prompts, j))
}

// buildCompletion assembles the response: choice i is prompt i/n's sample i%n.
func (s *Server) buildCompletion(req *completionRequest, eng *engine, prompts [][]int, j *job) completion {
	var idb [12]byte
	_, _ = rand.Read(idb[:])
	out := completion{ID: "cmpl-" + hex.EncodeToString(idb[:]), Object: "text_completion", Created: time.Now().Unix(), Model: req.Model}
	echoLP := map[int]*logprobs{}
	spell := func(id int) string { return tokenString(s.tok, id) }
	if req.TokensAsIDs {
		spell = tokenID
	}
	for i, rw := range j.rows {
		p := i / req.N
		prefix := ""
		var lp *logprobs
		if req.Echo {
			prefix = promptText(req.Prompts[p], s.tok)
		}
		if req.Logprobs >= 0 {
			lp = &logprobs{}
			if req.Echo {
				if echoLP[p] == nil {
					echoLP[p] = s.promptLogprobs(eng, prompts[p], req.Logprobs, spell)
				}
				lp.append(echoLP[p])
			}
			lp.append(s.generatedLogprobs(rw, len(prefix), req.Logprobs, spell))
		}
		out.Choices = append(out.Choices, choice{Text: prefix + rw.text, Index: i, Logprobs: lp, FinishReason: rw.finish})
		out.Usage.CompletionTokens += len(rw.out)
	}
	for _, p := range prompts {
		out.Usage.PromptTokens += len(p)
	}
	out.Usage.TotalTokens = out.Usage.PromptTokens + out.Usage.CompletionTokens
	return out
}

func (l *logprobs) append(o *logprobs) {
	l.Tokens = append(l.Tokens, o.Tokens...)
	l.TokenLogprobs = append(l.TokenLogprobs, o.TokenLogprobs...)
	l.TopLogprobs = append(l.TopLogprobs, o.TopLogprobs...)
	l.TextOffset = append(l.TextOffset, o.TextOffset...)
}

// topMap is a top_logprobs entry: the k most likely tokens and the chosen one, spelt by spell.
func topMap(tops []tokenLP, chosen int, chosenLP float64, spell func(int) string) map[string]float64 {
	m := make(map[string]float64, len(tops)+1)
	for _, t := range tops {
		m[spell(t.id)] = t.lp
	}
	m[spell(chosen)] = chosenLP
	return m
}

// generatedLogprobs are a row's tokens with the log-probabilities recorded while decoding;
// offsets start after the echoed prompt text (base bytes).
func (s *Server) generatedLogprobs(rw *row, base, k int, spell func(int) string) *logprobs {
	lp := &logprobs{Tokens: []string{}, TokenLogprobs: []*float64{}, TopLogprobs: []map[string]float64{}, TextOffset: []int{}}
	for i, id := range rw.out {
		v := rw.lps[i]
		lp.Tokens = append(lp.Tokens, spell(id))
		lp.TokenLogprobs = append(lp.TokenLogprobs, &v)
		var tops []tokenLP
		if k > 0 {
			tops = rw.tops[i]
		}
		lp.TopLogprobs = append(lp.TopLogprobs, topMap(tops, id, v, spell))
		lp.TextOffset = append(lp.TextOffset, base+len(s.tok.Decode(rw.out[:i])))
	}
	return lp
}

// promptLogprobs scores an echoed prompt with one full forward pass: token t's log-probability
// given tokens before it (null for the first).
func (s *Server) promptLogprobs(eng *engine, prompt []int, k int, spell func(int) string) *logprobs {
	logits := eng.inf.Logits(prompt)
	lp := &logprobs{}
	for t, id := range prompt {
		lp.Tokens = append(lp.Tokens, spell(id))
		lp.TextOffset = append(lp.TextOffset, len(s.tok.Decode(prompt[:t])))
		if t == 0 {
			lp.TokenLogprobs = append(lp.TokenLogprobs, nil)
			lp.TopLogprobs = append(lp.TopLogprobs, nil)
			continue
		}
		row := logits[t-1]
		lse := kernels.LogSumExp(row)
		v := row[id] - lse
		lp.TokenLogprobs = append(lp.TokenLogprobs, &v)
		lp.TopLogprobs = append(lp.TopLogprobs, topMap(topTokens(row, lse, k), id, v, spell))
	}
	return lp
}
