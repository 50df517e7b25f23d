package annotator

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"

	"golang.org/x/sync/errgroup"
)

// Reward model protocols of RewardModelConfig.Protocol.
const (
	// ProtocolOpenRLHF is OpenRLHF's remote reward model server (openrlhf.cli.serve_rm, POST
	// /get_reward): {"query": [text, ...]} -> {"rewards": [r, ...]}. It reports no token usage.
	ProtocolOpenRLHF = "OpenRLHF"
	// ProtocolVLLMPooling is vLLM's Pooling API (POST /pooling), the online API vLLM documents
	// for reward models: {"model": m, "input": [text, ...], "task": t} -> {"data": [{"index": i,
	// "data": d}, ...], "usage": {"prompt_tokens": n}}. A sequence reward model (task
	// "classify", one label) gives d = [r]; a token reward model (task "token_classify") gives
	// one [value] per token, and the reward is the last token's.
	ProtocolVLLMPooling = "VLLMPooling"
)

// RewardModelConfig configures a RewardModel; zero fields take the defaults.
type RewardModelConfig struct {
	// Protocol is ProtocolOpenRLHF or ProtocolVLLMPooling.
	Protocol string
	// URL is the endpoint itself: http://rm:5000/get_reward (OpenRLHF), http://rm:8000/pooling
	// (vLLM).
	URL string
	// Model is the served model name (VLLMPooling; optional, vLLM's default is its one model).
	Model string
	// Task is the pooling task (VLLMPooling; optional): "classify" for a sequence reward model,
	// "token_classify" for a token reward model; empty leaves it to the server.
	Task string
	// Token, if set, is sent as "Authorization: Bearer <Token>"; it never appears in an error.
	Token string
	// BatchSize is the number of texts per request (default 32).
	BatchSize int
	Limits    Limits
	Retry     Retry
	Client    *http.Client // default: a plain one
}

// RewardModel scores each response by a reward model served over HTTP: the text scored is
// prompt + response, exactly concatenated (as OpenRLHF's queries are; a chat template, if the
// model needs one, is the server's or the task's to apply). Texts go in requests of BatchSize,
// MaxConcurrency at a time, through the shared client (Retry, Limits). The rewards are the
// scores: the label stage pairs the best over the worst response of an item.
type RewardModel struct {
	cfg    RewardModelConfig
	remote *remote
	ledger ledger
}

// NewRewardModel checks cfg and builds the reward model; errors name the field and the fix.
func NewRewardModel(cfg RewardModelConfig) (*RewardModel, error) {
	switch cfg.Protocol {
	case ProtocolOpenRLHF:
		if cfg.Limits.usesTokens() {
			return nil, errors.New("reward model limits: the OpenRLHF protocol reports no token usage, so TokensPerMinute and MaxTokens cannot apply; bound MaxRequests or RequestsPerMinute instead")
		}
		if cfg.Model != "" || cfg.Task != "" {
			return nil, errors.New("reward model Model and Task are VLLMPooling settings; OpenRLHF's server serves one model: leave them empty")
		}
	case ProtocolVLLMPooling:
	default:
		return nil, fmt.Errorf("reward model Protocol %q: use %s or %s", cfg.Protocol, ProtocolOpenRLHF, ProtocolVLLMPooling)
	}
	if u, err := url.Parse(cfg.URL); cfg.URL == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("reward model URL %q: want the endpoint, such as http://rm:5000/get_reward (OpenRLHF) or http://rm:8000/pooling (vLLM)", cfg.URL)
	}
	if cfg.BatchSize < 0 {
		return nil, fmt.Errorf("reward model BatchSize %d: want 0 (the default, 32) or a positive number", cfg.BatchSize)
	}
	cfg.BatchSize = cmp.Or(cfg.BatchSize, 32)
	m := &RewardModel{cfg: cfg}
	var err error
	if m.remote, err = newRemote(cfg.Token, cfg.Client, cfg.Retry, cfg.Limits, &m.ledger); err != nil {
		return nil, fmt.Errorf("reward model %w", err)
	}
	return m, nil
}

// Name implements BatchScorer.
func (m *RewardModel) Name() string { return "reward:" + cmp.Or(m.cfg.Model, m.cfg.URL) }

// Accounting is what the reward model has scored and spent so far.
func (m *RewardModel) Accounting() Accounting { return m.ledger.get() }

// ScoreBatch implements BatchScorer.
func (m *RewardModel) ScoreBatch(ctx context.Context, items []Item) ([][]float64, error) {
	var texts []string
	for _, it := range items {
		for _, r := range it.Responses {
			texts = append(texts, it.Prompt+r)
		}
	}
	rewards := make([]float64, len(texts))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(1, m.remote.lim.l.MaxConcurrency))
	for lo := 0; lo < len(texts); lo += m.cfg.BatchSize {
		hi := min(lo+m.cfg.BatchSize, len(texts))
		g.Go(func() error {
			r, err := m.score(gctx, texts[lo:hi])
			if err != nil {
				return fmt.Errorf("reward model %s, texts %d-%d: %w", m.cfg.URL, lo, hi-1, err)
			}
			copy(rewards[lo:hi], r)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	m.ledger.add(Accounting{Texts: int64(len(texts))})
	out := make([][]float64, len(items))
	k := 0
	for i, it := range items {
		out[i] = rewards[k : k+len(it.Responses) : k+len(it.Responses)]
		k += len(it.Responses)
	}
	return out, nil
}

// score sends one request and returns one reward per text.
func (m *RewardModel) score(ctx context.Context, texts []string) ([]float64, error) {
	var req any = map[string]any{"query": texts}
	if m.cfg.Protocol == ProtocolVLLMPooling {
		p := map[string]any{"input": texts}
		if m.cfg.Model != "" {
			p["model"] = m.cfg.Model
		}
		if m.cfg.Task != "" {
			p["task"] = m.cfg.Task
		}
		req = p
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	data, err := m.remote.post(ctx, m.cfg.URL, body)
	if err != nil {
		return nil, err
	}
	var rewards []float64
	var tokens int64 = -1 // not reported
	if m.cfg.Protocol == ProtocolOpenRLHF {
		rewards, err = decodeOpenRLHF(data, len(texts))
	} else {
		rewards, tokens, err = decodeVLLMPooling(data, len(texts))
	}
	if err != nil {
		return nil, m.remote.redact(err)
	}
	if tokens >= 0 {
		m.ledger.add(Accounting{PromptTokens: tokens})
		m.remote.lim.spend(tokens)
	} else if m.cfg.Limits.usesTokens() {
		return nil, errors.New("the answer reports no usage, so limits TokensPerMinute and MaxTokens cannot apply: unset them")
	}
	return rewards, nil
}

func finite(i int, v *float64) (float64, error) {
	if v == nil {
		return 0, fmt.Errorf("text %d: reward null is not a finite number", i)
	}
	if math.IsNaN(*v) || math.IsInf(*v, 0) {
		return 0, fmt.Errorf("text %d: reward %v is not a finite number", i, *v)
	}
	return *v, nil
}

// decodeOpenRLHF reads {"rewards": [r, ...]}, one finite number per text.
func decodeOpenRLHF(data []byte, n int) ([]float64, error) {
	var r struct {
		Rewards []*float64 `json:"rewards"`
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf(`answer is not {"rewards": [...]}: %v (%s)`, err, excerpt(data))
	}
	if len(r.Rewards) != n {
		return nil, fmt.Errorf("answer has %d rewards for %d texts (%s)", len(r.Rewards), n, excerpt(data))
	}
	out := make([]float64, n)
	for i, v := range r.Rewards {
		var err error
		if out[i], err = finite(i, v); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// decodeVLLMPooling reads a vLLM PoolingResponse: one data entry per text (by index), each
// [r] or, token-wise, [[v], ..., [r]]; and usage.prompt_tokens (-1 when absent).
func decodeVLLMPooling(data []byte, n int) ([]float64, int64, error) {
	var r struct {
		Data []struct {
			Index *int            `json:"index"`
			Data  json.RawMessage `json:"data"`
		} `json:"data"`
		Usage *struct {
			PromptTokens int64 `json:"prompt_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, 0, fmt.Errorf(`answer is not a vLLM pooling response {"data": [...]}: %v (%s)`, err, excerpt(data))
	}
	if len(r.Data) != n {
		return nil, 0, fmt.Errorf("answer has %d data entries for %d texts", len(r.Data), n)
	}
	out := make([]float64, n)
	seen := make([]bool, n)
	for k, d := range r.Data {
		i := k
		if d.Index != nil {
			i = *d.Index
		}
		if i < 0 || i >= n || seen[i] {
			return nil, 0, fmt.Errorf("data entry %d: index %d is out of range or repeated", k, i)
		}
		seen[i] = true
		v, err := poolingReward(d.Data)
		if err != nil {
			return nil, 0, fmt.Errorf("text %d: %w", i, err)
		}
		if out[i], err = finite(i, v); err != nil {
			return nil, 0, err
		}
	}
	tokens := int64(-1)
	if r.Usage != nil {
		tokens = r.Usage.PromptTokens
	}
	return out, tokens, nil
}

// poolingReward is the scalar of one pooling output: [r], or the last row of [[v], ..., [r]].
func poolingReward(raw json.RawMessage) (*float64, error) {
	var flat []*float64
	if json.Unmarshal(raw, &flat) == nil {
		if len(flat) != 1 {
			return nil, fmt.Errorf("pooling data has %d values, a reward model gives 1: serve a model with one output (num_labels 1), or set Task", len(flat))
		}
		return flat[0], nil
	}
	var rows [][]*float64
	if err := json.Unmarshal(raw, &rows); err != nil {
		return nil, fmt.Errorf("pooling data %s is neither [r] nor [[v], ..., [r]]", excerpt(raw))
	}
	if len(rows) == 0 || len(rows[len(rows)-1]) != 1 {
		return nil, fmt.Errorf("token-wise pooling data %s: want one value per token, the reward last", excerpt(raw))
	}
	return rows[len(rows)-1][0], nil
}
