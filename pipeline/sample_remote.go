package pipeline

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"golang.org/x/sync/errgroup"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/trainer/model"
	"github.com/bpo-dev/bpo/trainer/tokenizer"
)

// Sampling through a server (spec.sampler.engine kind OpenAI). The sample stage of phase k loads
// phase-<k>/behavior-adapter (the ensemble after phase k-1 as one LoRA adapter, exactly the
// behavior model) into the server under a name of its own (engineAdapterName), asks it for
// samplesPerPrompt completions of every prompt of the shard (the prompt as our token ids, the
// run's temperature, top-p, top-k and maxNewTokens, a seed per prompt), and reads the responses
// back as token ids (vLLM's return_tokens_as_token_ids; the text, tokenized, when a server
// ignores it). The behavior and reference log-probs are then our own scoring of those tokens, as
// in the built-in sampler, so the rows are the same whichever engine drew them; the server's own
// log-probs only check that it serves the behavior model (servedLogprobTolerance).
//
// The server must read the adapter: lora_path is the folder as the server sees it,
// spec.sampler.engine.workspacePath (default: the stage's own workspace path, which is
// /workspace in a pod) joined with the run folder. docs/serve.md shows a vLLM and a bpo serve
// Deployment that mount the run's workspace claim for it.

// servedLogprobTolerance bounds the mean absolute difference, in nats per token, between the
// server's log-probs of the tokens it drew and the behavior model's: bpo serve agrees to ~1e-5,
// vLLM in bfloat16 to a few hundredths; a server that does not apply the adapter, or serves
// another base model, is off by far more.
const servedLogprobTolerance = 0.1

// engineRetries is how many times a failed request to the server is retried (connection errors,
// 408, 409, 429, 5xx; Retry-After honoured). A variable so that tests need not wait.
var engineRetries = 3

// engineTimeout bounds one request (a completion of samplesPerPrompt responses, or an adapter
// load, which on a large model takes a while).
var engineTimeout = 5 * time.Minute

// samplerEngine is spec.sampler.engine when it is a server, else nil.
func (e *Env) samplerEngine() *v1alpha1.SamplerEngine {
	if s := e.Run.Spec.Sampler.Engine; s != nil && s.Kind == v1alpha1.SamplerEngineOpenAI {
		return s
	}
	return nil
}

// engineAdapterName is the name phase k's behavior adapter is served under: the run's name,
// the start of its uid (two runs of one name, in two namespaces or one after the other, never
// share it) and the phase.
func engineAdapterName(run, uid string, k int) string {
	if len(uid) > 8 {
		uid = uid[:8]
	}
	if uid == "" {
		return fmt.Sprintf("%s-p%d", run, k)
	}
	return fmt.Sprintf("%s-%s-p%d", run, uid, k)
}

// engineClient talks to spec.sampler.engine: completions and the model list through the OpenAI
// SDK, vLLM's adapter endpoints (not part of OpenAI's API) through go-retryablehttp. No error
// carries the token.
type engineClient struct {
	spec  *v1alpha1.SamplerEngine
	base  string // the url without a trailing slash
	token string
	oa    openai.Client
	rc    *retryablehttp.Client
}

func newEngineClient(spec *v1alpha1.SamplerEngine, token string) (*engineClient, error) {
	if !strings.HasPrefix(spec.URL, "http://") && !strings.HasPrefix(spec.URL, "https://") {
		return nil, fmt.Errorf("spec.sampler.engine.url %q: kind OpenAI needs the server's http:// or https:// API base, e.g. http://vllm:8000/v1", spec.URL)
	}
	if token != "" && strings.HasPrefix(spec.URL, "http://") && !spec.AllowInsecureHTTP {
		return nil, fmt.Errorf("spec.sampler.engine.url %s: the token of $%s is only sent over https://; use an https url, or set spec.sampler.engine.allowInsecureHTTP: true for an in-cluster server without TLS",
			spec.URL, v1alpha1.EnvSamplerToken)
	}
	base := strings.TrimRight(spec.URL, "/")
	hc := &http.Client{Timeout: engineTimeout}
	opts := []option.RequestOption{option.WithBaseURL(base + "/"), option.WithHTTPClient(hc),
		option.WithMaxRetries(engineRetries), option.WithRequestTimeout(engineTimeout)}
	// The SDK sends "Authorization: Bearer <key>" and insists on some key; a server without
	// authentication ignores it.
	opts = append(opts, option.WithAPIKey(cmp.Or(token, "none")))
	rc := retryablehttp.NewClient()
	rc.HTTPClient, rc.RetryMax, rc.Logger = hc, engineRetries, nil
	rc.RetryWaitMin, rc.RetryWaitMax = 500*time.Millisecond, 8*time.Second
	return &engineClient{spec: spec, base: base, token: token, oa: openai.NewClient(opts...), rc: rc}, nil
}

// fail is an error about the server: it names spec.sampler.engine.url, says what failed, carries
// the server's own message, and never the token.
func (c *engineClient) fail(what string, err error) error {
	msg := err.Error()
	var ae *openai.Error
	if errors.As(err, &ae) {
		msg = fmt.Sprintf("HTTP %d", ae.StatusCode)
		if ae.Message != "" {
			msg += ": " + ae.Message
		}
	}
	msg = Redact(msg)
	if c.token != "" {
		msg = strings.ReplaceAll(msg, c.token, redacted)
	}
	return fmt.Errorf("spec.sampler.engine.url %s: %s: %s", c.spec.URL, what, msg)
}

// models lists the ids the server serves.
func (c *engineClient) models(ctx context.Context) ([]string, error) {
	page, err := c.oa.Models.List(ctx)
	if err != nil {
		return nil, c.fail("listing the served models (GET /models)", err)
	}
	var ids []string
	for _, m := range page.Data {
		ids = append(ids, m.ID)
	}
	return ids, nil
}

// adapterCall POSTs {"lora_name", "lora_path"} to one of vLLM's adapter endpoints.
func (c *engineClient) adapterCall(ctx context.Context, endpoint, name, path string) error {
	body := map[string]string{"lora_name": name}
	if path != "" {
		body["lora_path"] = path
	}
	b, _ := json.Marshal(body)
	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodPost, c.base+"/"+endpoint, b)
	if err != nil {
		return c.fail(endpoint, err)
	}
	req.Header.Set("Content-Type", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.rc.Do(req)
	if err != nil {
		return c.fail("POST /"+endpoint, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return c.fail("POST /"+endpoint, fmt.Errorf("HTTP %d: %s", resp.StatusCode, serverMessage(data)))
	}
	return nil
}

// serverMessage is the message of an error body: OpenAI's {"error": {"message"}}, vLLM's flat
// {"message"}, or the body itself.
func serverMessage(body []byte) string {
	var e struct {
		Message string `json:"message"`
		Error   *struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil {
		if e.Error != nil && e.Error.Message != "" {
			return e.Error.Message
		}
		if e.Message != "" {
			return e.Message
		}
	}
	return strings.TrimSpace(string(bytes.ToValidUTF8(body, nil)))
}

// loadBehaviorAdapter makes the server serve phase k's behavior adapter under name, once: a
// retried or second shard finds it listed. The previous phase's adapter of this run, whose
// sampling is over, is unloaded.
func (e *Env) loadBehaviorAdapter(ctx context.Context, c *engineClient, k int) (string, error) {
	ids, err := c.models(ctx)
	if err != nil {
		return "", err
	}
	if !slices.Contains(ids, c.spec.Model) {
		return "", fmt.Errorf("spec.sampler.engine.model %q is not served by %s (it serves %s): set it to the server's name for spec.model (vLLM's --served-model-name)",
			c.spec.Model, c.spec.URL, strings.Join(ids, ", "))
	}
	name := engineAdapterName(e.Run.Name, e.Run.UID, k)
	if prev := engineAdapterName(e.Run.Name, e.Run.UID, k-1); k > 1 && slices.Contains(ids, prev) {
		if err := c.adapterCall(ctx, "unload_lora_adapter", prev, ""); err != nil && e.Log != nil {
			fmt.Fprintf(e.Log, "phase %d: unloading the adapter of phase %d: %v\n", k, k-1, err)
		}
	}
	if slices.Contains(ids, name) {
		return name, nil
	}
	vol, err := filepath.Abs(e.VolumeRoot)
	if err != nil {
		return "", err
	}
	dir, err := filepath.Abs(e.WS.BehaviorAdapterDir(k))
	if err != nil {
		return "", err
	}
	rel, err := filepath.Rel(vol, dir)
	if err != nil {
		return "", err
	}
	root := cmp.Or(c.spec.WorkspacePath, vol)
	path := filepath.ToSlash(filepath.Join(root, rel))
	if err := c.adapterCall(ctx, "load_lora_adapter", name, path); err != nil {
		// Another shard may have loaded it meanwhile.
		if again, lerr := c.models(ctx); lerr == nil && slices.Contains(again, name) {
			return name, nil
		}
		return "", fmt.Errorf("%w (lora_path %s: the server must see the workspace there; set spec.sampler.engine.workspacePath to where it mounts the workspace volume)", err, path)
	}
	return name, nil
}

// served is one response as the server drew it: our token ids (with end-of-text appended when
// it stopped on its own, as the built-in sampler's rows) and the server's log-prob of each token
// it reported (nil when it gave text instead of token ids).
type served struct {
	ids []int
	lps []float64
}

// sampleRemote draws n responses for each prompt of the shard (rows firstRow...) from the
// server: response q = prompt q/n, sample q%n, as the built-in sampler lays them out.
func (e *Env) sampleRemote(k int, tok tokenizer.Tokenizer, prompts [][]int, n, firstRow int) ([]served, error) {
	spec := e.samplerEngine()
	c, err := newEngineClient(spec, os.Getenv(v1alpha1.EnvSamplerToken))
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	name, err := e.loadBehaviorAdapter(ctx, c, k)
	if err != nil {
		return nil, err
	}
	out := make([]served, len(prompts)*n)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(int(cmp.Or(spec.MaxConcurrency, v1alpha1.DefaultSamplerMaxConcurrency)))
	var mu sync.Mutex
	done := 0
	seed := e.streamSeed("sample", k)
	for i, p := range prompts {
		g.Go(func() error {
			rows, err := e.completePrompt(gctx, c, name, tok, p, n, promptSeed(seed, firstRow+i))
			if err != nil {
				return fmt.Errorf("phase %d prompt %d: %w", k, firstRow+i, err)
			}
			copy(out[i*n:], rows)
			mu.Lock()
			done++
			e.progress(v1alpha1.StageSample, done*n, len(out))
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}

// promptSeed is the seed of prompt `row`'s request: a function of the phase's stream and the
// prompt's index alone, so that any sharding and any retry ask the same; non-negative (the
// OpenAI API's seed is a signed integer).
func promptSeed(stream uint64, row int) int64 {
	z := stream + uint64(row+1)*0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return int64((z ^ z>>31) >> 1)
}

// completePrompt asks for n completions of one prompt and reads them back as token ids.
func (e *Env) completePrompt(ctx context.Context, c *engineClient, model string, tok tokenizer.Tokenizer, prompt []int, n int, seed int64) ([]served, error) {
	s := e.Run.Spec.Sampler
	ids := make([]int64, len(prompt))
	for i, id := range prompt {
		ids[i] = int64(id)
	}
	params := openai.CompletionNewParams{
		Model:       openai.CompletionNewParamsModel(model),
		Prompt:      openai.CompletionNewParamsPromptUnion{OfArrayOfTokens: ids},
		MaxTokens:   openai.Int(int64(s.MaxNewTokens)),
		N:           openai.Int(int64(n)),
		Seed:        openai.Int(seed),
		Temperature: openai.Float(e.Run.Temperature),
		Logprobs:    openai.Int(0),
	}
	if e.Run.TopP > 0 && e.Run.TopP < 1 {
		params.TopP = openai.Float(e.Run.TopP)
	}
	opts := []option.RequestOption{option.WithJSONSet("return_tokens_as_token_ids", true)}
	if s.TopK != nil {
		opts = append(opts, option.WithJSONSet("top_k", *s.TopK)) // vLLM's extra parameter
	}
	res, err := c.oa.Completions.New(ctx, params, opts...)
	if err != nil {
		return nil, c.fail("POST /completions", err)
	}
	if len(res.Choices) != n {
		return nil, c.fail("POST /completions", fmt.Errorf("%d choices for n=%d", len(res.Choices), n))
	}
	out := make([]served, n)
	seen := make([]bool, n)
	for _, ch := range res.Choices {
		j := int(ch.Index)
		if j < 0 || j >= n || seen[j] {
			return nil, c.fail("POST /completions", fmt.Errorf("choice index %d out of [0, %d) or repeated", ch.Index, n))
		}
		seen[j] = true
		r, err := readChoice(tok, ch, int(s.MaxNewTokens))
		if err != nil {
			return nil, c.fail("POST /completions", err)
		}
		out[j] = r
	}
	return out, nil
}

// readChoice turns a choice into a response row: its token ids from the logprobs tokens
// ("token_id:<id>") or, when the server spelt them as text, our tokenization of the text; the
// end-of-text token appended when it stopped on its own (finish_reason "stop", or an
// end-of-text token the server reported, as vLLM does).
func readChoice(tok tokenizer.Tokenizer, ch openai.CompletionChoice, maxNew int) (served, error) {
	var r served
	asIDs := len(ch.Logprobs.Tokens) > 0
	for _, t := range ch.Logprobs.Tokens {
		asIDs = asIDs && strings.HasPrefix(t, "token_id:")
	}
	if asIDs {
		if len(ch.Logprobs.TokenLogprobs) != len(ch.Logprobs.Tokens) {
			return r, fmt.Errorf("%d tokens but %d token_logprobs", len(ch.Logprobs.Tokens), len(ch.Logprobs.TokenLogprobs))
		}
		for i, t := range ch.Logprobs.Tokens {
			id, err := strconv.Atoi(strings.TrimPrefix(t, "token_id:"))
			if err != nil || id < 0 {
				return r, fmt.Errorf("token %q is not a token id", t)
			}
			r.ids = append(r.ids, id)
			r.lps = append(r.lps, ch.Logprobs.TokenLogprobs[i])
		}
	} else {
		r.ids = tok.Encode(ch.Text)
	}
	ended := ch.FinishReason == openai.CompletionChoiceFinishReasonStop
	if n := len(r.ids); n > 0 && r.ids[n-1] == tok.EOT() {
		r.ids, ended = r.ids[:n-1], true
		if r.lps != nil {
			r.lps = r.lps[:n-1]
		}
	}
	if len(r.ids) > maxNew {
		return r, fmt.Errorf("a response of %d tokens, more than spec.sampler.maxNewTokens %d", len(r.ids), maxNew)
	}
	if ended {
		r.ids = append(r.ids, tok.EOT())
	}
	return r, nil
}

// scoreServed computes the behavior log-probs of the served responses with our own model (the
// sums the built-in sampler records) and checks them against the server's: the mean absolute
// difference per token must stay within servedLogprobTolerance.
func (e *Env) scoreServed(k int, inf *model.Inference, prompts, resp [][]int, rows []served) ([]float64, error) {
	tlp, err := inf.TokenLogProbs(prompts, resp)
	if err != nil {
		return nil, err
	}
	sums := make([]float64, len(tlp))
	var diff float64
	var count int
	worst := 0.0
	for i, l := range tlp {
		for j, v := range l {
			sums[i] += v
			if j < len(rows[i].lps) {
				d := math.Abs(v - rows[i].lps[j])
				diff, count, worst = diff+d, count+1, max(worst, d)
			}
		}
	}
	if count > 0 {
		mean := diff / float64(count)
		if e.Log != nil {
			fmt.Fprintf(e.Log, "phase %d: the server's log-probs of %d tokens differ from the behavior model's by %.2g nats on average (at most %.2g)\n", k, count, mean, worst)
		}
		if !(mean <= servedLogprobTolerance) {
			return nil, fmt.Errorf("spec.sampler.engine: the server's log-probs of the %d tokens it drew differ from phase %d's behavior model by %.3g nats per token on average (tolerance %g): it does not serve the behavior model; check that spec.sampler.engine.model is spec.model and that it reads the adapter from spec.sampler.engine.workspacePath",
				count, k, mean, servedLogprobTolerance)
		}
	}
	return sums, nil
}
