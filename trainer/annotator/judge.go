package annotator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"text/template"

	"golang.org/x/sync/errgroup"
)

// DefaultJudgeTemplate is the judge prompt of the built-in "reviews" task: the prompt is the
// opening of a short review, the responses are continuations. It asks for the objective of the
// gold annotator (a more positive review) under the constraint its guards enforce (fluent,
// on-topic English), so a judge and "sentiment" can be compared.
const DefaultJudgeTemplate = `You compare two continuations of the opening of a short review (of a product, a restaurant or a film).

Opening:
<opening>
{{.Prompt}}
</opening>

Continuation A:
<A>
{{.A}}
</A>

Continuation B:
<B>
{{.B}}
</B>

Which continuation makes the review more positive while staying fluent, on-topic English that follows on from the opening? A continuation that is garbled, repetitive, off-topic or not English is worse than a fluent one, however positive its words. Judge the text, not its position or its length. If neither is better, answer tie.

Answer with exactly one word: A, B or tie.`

// Structured output modes of JudgeConfig.Structured.
const (
	StructuredAuto = "auto" // send response_format; on a 400, fall back to text for the rest of the run
	StructuredJSON = "json" // always send response_format
	StructuredText = "text" // never: parse the text of the answer
)

// JudgeConfig configures an OpenAIJudge; zero fields take the defaults.
type JudgeConfig struct {
	// URL is the base of an OpenAI-compatible API, such as http://vllm:8000/v1: requests go
	// to URL + "/chat/completions".
	URL string
	// Model is the model name the server serves (required).
	Model string
	// Token, if set, is sent as "Authorization: Bearer <Token>"; it never appears in an error.
	Token string
	// Template is a text/template over .Prompt, .A and .B that asks which of A and B is better,
	// to be answered "A", "B" or "tie" (default DefaultJudgeTemplate).
	Template string
	// Temperature of the judge's sampling (default 0: as deterministic as the server allows).
	Temperature float64
	// MaxTokens bounds the answer (default 32; a reasoning model needs far more).
	MaxTokens int
	// Structured is "auto" (default), "json" or "text" (see the Structured* constants).
	Structured string
	// MaxInvalidRetries is how many times an answer that cannot be read is asked again
	// (default 2; negative: never) before it counts as invalid, that is a tie.
	MaxInvalidRetries int
	Limits            Limits
	Retry             Retry
	// CacheDir, if set, is a folder (of the workspace) that keeps every verdict: a second judge
	// over the same folder, with the same identity, asks nothing it already knows.
	CacheDir string
	// Client is the HTTP client to use (default: a plain one).
	Client *http.Client
}

// OpenAIJudge is a pairwise judge: an LLM served behind any OpenAI-compatible
// chat-completions API (vLLM, SGLang, llama.cpp, a hosted API) asked which of two responses to a
// prompt is better. It implements BatchScorer, so it can label pairs and score evaluations.
//
// # Both orders
//
// LLM judges favour a position (often the first shown). Every pair (x, y) is therefore asked
// twice, once as (A=x, B=y) and once as (A=y, B=x). The verdict stands only if both orders
// agree; otherwise the pair is a tie, counted as a position flip. An answer that cannot be read
// (see below) is asked again up to MaxInvalidRetries times, then counts as invalid, and the
// pair is a tie: a broken answer never defaults to the first response.
//
// # Scores
//
// ScoreBatch turns verdicts into scores that keep the meaning the pipeline gives them: for an
// item of two responses the winner scores 1 and the loser 0, a tie 0.5 each, so the label stage
// makes a pair of the winner over the loser and drops ties, and an evaluation item
// [policy, reference] counts a win only when the policy's completion won both orders. With
// more responses every unordered pair is judged (both orders) and a response scores its wins
// plus half its ties. Two identical responses are a tie without asking.
//
// # Answers
//
// With Structured "auto" or "json" the request carries an OpenAI response_format (a JSON schema
// {"verdict": "A"|"B"|"tie"}), which vLLM and most servers enforce by guided decoding. A server
// that rejects it with 400 makes an "auto" judge fall back to plain text for the rest of the run.
// Answers are read strictly (see parseVerdict): "A", "B", "tie", {"verdict": ...}, with light
// decoration ("Answer: A", "**B**") and an optional <think> block before; anything else is
// invalid. An answer whose body is not a chat completion at all is asked again the same way,
// and fails the call if it stays so.
//
// # Spending
//
// Requests go through the shared client (see Retry and Limits): bounded concurrency, requests
// and tokens per minute (from the answers' usage), a budget that fails the call with
// ErrBudgetExceeded rather than spend more, and retries of connection errors, 429 and 5xx.
// With CacheDir set every verdict (one order of one pair, invalid ones included) is kept in a
// file keyed by the judge's identity (model, template, temperature, structured mode, answer
// length; not the URL, so a moved server keeps its cache), the prompt and the two responses in
// their order. Accounting() reports pairs, ties, invalid answers, flips, requests, tokens and
// cache hits.
type OpenAIJudge struct {
	cfg      JudgeConfig
	endpoint string
	tmpl     *template.Template
	identity string
	remote   *remote
	cache    *verdictCache // nil: none
	ledger   ledger
	textOnly atomic.Bool // an "auto" judge whose server refused response_format
}

// NewOpenAIJudge checks cfg and builds the judge; errors name the field and the fix.
func NewOpenAIJudge(cfg JudgeConfig) (*OpenAIJudge, error) {
	u, err := url.Parse(cfg.URL)
	if cfg.URL == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("judge URL %q: want the base of an OpenAI-compatible API, such as http://vllm:8000/v1", cfg.URL)
	}
	if cfg.Model == "" {
		return nil, errors.New("judge Model is empty: name the model the server serves (GET <URL>/models lists them)")
	}
	if cfg.Template == "" {
		cfg.Template = DefaultJudgeTemplate
	}
	tmpl, err := template.New("judge").Option("missingkey=error").Parse(cfg.Template)
	if err != nil {
		return nil, fmt.Errorf("judge Template: %w", err)
	}
	if err := tmpl.Execute(&bytes.Buffer{}, judgeInput{"p", "a", "b"}); err != nil {
		return nil, fmt.Errorf("judge Template: %w (it may use .Prompt, .A and .B)", err)
	}
	if cfg.Temperature < 0 || cfg.Temperature > 2 {
		return nil, fmt.Errorf("judge Temperature %v: want a value in [0, 2] (0 for a deterministic judge)", cfg.Temperature)
	}
	if cfg.MaxTokens < 0 {
		return nil, fmt.Errorf("judge MaxTokens %d: want 0 (the default, 32) or a positive number", cfg.MaxTokens)
	}
	if cfg.MaxTokens == 0 {
		cfg.MaxTokens = 32
	}
	switch cfg.Structured {
	case "":
		cfg.Structured = StructuredAuto
	case StructuredAuto, StructuredJSON, StructuredText:
	default:
		return nil, fmt.Errorf("judge Structured %q: use auto, json or text", cfg.Structured)
	}
	if cfg.MaxInvalidRetries == 0 {
		cfg.MaxInvalidRetries = 2
	}
	j := &OpenAIJudge{cfg: cfg, endpoint: strings.TrimSuffix(cfg.URL, "/") + "/chat/completions", tmpl: tmpl}
	id, _ := json.Marshal([]any{cfg.Model, cfg.Template, cfg.Temperature, cfg.Structured, cfg.MaxTokens})
	j.identity = string(id)
	if cfg.CacheDir != "" {
		if err := os.MkdirAll(cfg.CacheDir, 0o755); err != nil {
			return nil, fmt.Errorf("judge CacheDir: %w", err)
		}
		j.cache = &verdictCache{dir: cfg.CacheDir}
	}
	j.remote, err = newRemote(cfg.Token, cfg.Client, cfg.Retry, cfg.Limits, &j.ledger)
	if err != nil {
		return nil, fmt.Errorf("judge %w", err)
	}
	return j, nil
}

// Name implements BatchScorer.
func (j *OpenAIJudge) Name() string { return "judge:" + j.cfg.Model }

// Accounting is what the judge has decided and spent so far.
func (j *OpenAIJudge) Accounting() Accounting { return j.ledger.get() }

type judgeInput struct{ Prompt, A, B string }

// pairRef is one unordered pair of an item's responses, and the verdicts of its two orders.
type pairRef struct {
	item, x, y int
	verdicts   [2]verdict
}

// ScoreBatch implements BatchScorer (see OpenAIJudge for the scores).
func (j *OpenAIJudge) ScoreBatch(ctx context.Context, items []Item) ([][]float64, error) {
	scores := make([][]float64, len(items))
	var pairs []*pairRef
	for i, it := range items {
		scores[i] = make([]float64, len(it.Responses))
		for x := range it.Responses {
			for y := x + 1; y < len(it.Responses); y++ {
				pairs = append(pairs, &pairRef{item: i, x: x, y: y})
			}
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(1, j.remote.lim.l.MaxConcurrency))
	for _, p := range pairs {
		rx, ry := items[p.item].Responses[p.x], items[p.item].Responses[p.y]
		if rx == ry {
			p.verdicts = [2]verdict{verdictTie, verdictTie}
			continue
		}
		for order, ab := range [2][2]string{{rx, ry}, {ry, rx}} {
			g.Go(func() error {
				v, err := j.judge(gctx, items[p.item].Prompt, ab[0], ab[1])
				if err != nil {
					return fmt.Errorf("judge %s, item %d, responses %d and %d: %w", j.cfg.Model, p.item, p.x, p.y, err)
				}
				p.verdicts[order] = v
				return nil
			})
		}
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	var acct Accounting
	for _, p := range pairs {
		o, flip, _ := combine(p.verdicts[0], p.verdicts[1])
		acct.Pairs++
		for _, v := range p.verdicts {
			if v == verdictInvalid {
				acct.Invalid++
			}
		}
		if flip {
			acct.PositionFlips++
		}
		s := scores[p.item]
		switch o {
		case 1:
			s[p.x]++
		case -1:
			s[p.y]++
		default:
			acct.Ties++
			s[p.x] += 0.5
			s[p.y] += 0.5
		}
	}
	j.ledger.add(acct)
	return scores, nil
}

// judge returns the verdict of one order (a shown as A, b as B), from the cache or the server.
func (j *OpenAIJudge) judge(ctx context.Context, prompt, a, b string) (verdict, error) {
	var key string
	if j.cache != nil {
		key = j.cache.key(j.identity, prompt, a, b)
		if v, ok := j.cache.get(key); ok {
			j.ledger.add(Accounting{CacheHits: 1})
			return v, nil
		}
	}
	var msg bytes.Buffer
	if err := j.tmpl.Execute(&msg, judgeInput{prompt, a, b}); err != nil {
		return 0, err
	}
	v := verdictInvalid
	var malformed error
	for try := 0; try <= max(0, j.cfg.MaxInvalidRetries); try++ {
		answer, err := j.ask(ctx, msg.String())
		var m *malformedAnswer
		if errors.As(err, &m) {
			malformed = err
			continue
		}
		if err != nil {
			return 0, err
		}
		malformed = nil
		if v = parseVerdict(answer); v != verdictInvalid {
			break
		}
	}
	if malformed != nil {
		return 0, malformed
	}
	if j.cache != nil {
		if err := j.cache.put(key, v); err != nil {
			return 0, err
		}
	}
	return v, nil
}

type chatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type chatRequest struct {
	Model          string         `json:"model"`
	Messages       []chatMessage  `json:"messages"`
	Temperature    float64        `json:"temperature"`
	MaxTokens      int            `json:"max_tokens"`
	ResponseFormat map[string]any `json:"response_format,omitempty"`
}

type chatResponse struct {
	Choices []struct {
		Message struct {
			Content *string `json:"content"`
		} `json:"message"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     int64 `json:"prompt_tokens"`
		CompletionTokens int64 `json:"completion_tokens"`
	} `json:"usage"`
}

// malformedAnswer is a 200 answer that is not a chat completion.
type malformedAnswer struct{ msg string }

func (e *malformedAnswer) Error() string { return e.msg }

// ask sends one chat completion and returns the text of its first choice ("" if none).
func (j *OpenAIJudge) ask(ctx context.Context, message string) (string, error) {
	req := chatRequest{Model: j.cfg.Model, Messages: []chatMessage{{"user", message}}, Temperature: j.cfg.Temperature, MaxTokens: j.cfg.MaxTokens}
	structured := j.cfg.Structured == StructuredJSON || (j.cfg.Structured == StructuredAuto && !j.textOnly.Load())
	if structured {
		req.ResponseFormat = verdictSchema
	}
	body, _ := json.Marshal(req)
	data, err := j.remote.post(ctx, j.endpoint, body)
	var se *statusError
	if structured && j.cfg.Structured == StructuredAuto && errors.As(err, &se) && se.code == http.StatusBadRequest {
		// The server does not take response_format (or this schema): plain text from now on.
		j.textOnly.Store(true)
		req.ResponseFormat = nil
		body, _ = json.Marshal(req)
		data, err = j.remote.post(ctx, j.endpoint, body)
	}
	if err != nil {
		return "", err
	}
	var r chatResponse
	if err := json.Unmarshal(data, &r); err != nil {
		return "", j.remote.redact(&malformedAnswer{fmt.Sprintf("answer is not a chat completion: %v (%s)", err, excerpt(data))})
	}
	if r.Usage != nil {
		j.ledger.add(Accounting{PromptTokens: r.Usage.PromptTokens, CompletionTokens: r.Usage.CompletionTokens})
		j.remote.lim.spend(r.Usage.PromptTokens + r.Usage.CompletionTokens)
	} else if j.cfg.Limits.usesTokens() {
		return "", errors.New("the answer reports no usage, so limits TokensPerMinute and MaxTokens cannot apply: unset them, or use a server that reports usage")
	}
	if len(r.Choices) == 0 || r.Choices[0].Message.Content == nil {
		return "", nil // no text: an invalid answer
	}
	return *r.Choices[0].Message.Content, nil
}
