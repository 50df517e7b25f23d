package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/serve"
	"github.com/bpo-dev/bpo/trainer/model"
	"github.com/bpo-dev/bpo/trainer/tokenizer"
)

// engineServer is `bpo serve` for the test volume's base model on loopback, behind a handler
// that wants "Authorization: Bearer <token>" when token is set and, like a careless proxy,
// echoes the header it got into its 401 answer.
type engineServer struct {
	url   string // the API base, .../v1
	s     *serve.Server
	mu    sync.Mutex
	calls map[string]int // POSTs by path
}

// tinyReviewsDir is the bundled trained model (byte-level, context 128) the runs below use as
// spec.model.builtin; the server serves the same folder.
const tinyReviewsDir = "../trainer/task/models/tiny-reviews"

func startEngine(t *testing.T, runtimeLoRA bool, token string) *engineServer {
	t.Helper()
	s, err := serve.New(serve.Options{ModelDir: tinyReviewsDir, RuntimeLoRA: runtimeLoRA})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Load(); err != nil {
		t.Fatal(err)
	}
	es := &engineServer{s: s, calls: map[string]int{}}
	h := s.Handler()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if token != "" && r.Header.Get("Authorization") != "Bearer "+token {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{
				"message": "bad credentials: " + r.Header.Get("Authorization"), "type": "authentication_error"}})
			return
		}
		if r.Method == http.MethodPost {
			es.mu.Lock()
			es.calls[r.URL.Path]++
			es.mu.Unlock()
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
		hs.Close()
	})
	es.url = hs.URL + "/v1"
	return es
}

// Engine makes the run sample through e, from the bundled tiny-reviews model and its SFT
// adapters.
func (b *runBuilder) Engine(e *v1alpha1.SamplerEngine) *runBuilder {
	s := &b.ar.Spec
	s.Sampler.Engine = e
	s.Model.Path, s.Model.Builtin = "", "tiny-reviews"
	s.Ensemble.Rank, s.Ensemble.Alpha = 0, 0 // the bundled adapters' (the defaults)
	s.Sampler.MaxNewTokens = 12
	return b
}

// TestSampleThroughServer runs a whole local run whose samples come from `bpo serve`: the
// server loads each phase's behavior adapter, answers every prompt, and the rows' behavior
// log-probs are what the server itself gives the same tokens (1e-4 nats per response).
func TestSampleThroughServer(t *testing.T) {
	vol := t.TempDir()
	const token = "s3cret-sampler-token"
	es := startEngine(t, true, token)
	t.Setenv(v1alpha1.EnvSamplerToken, token)
	e := makeRun("remote").Shards(2, 1).Engine(&v1alpha1.SamplerEngine{Kind: v1alpha1.SamplerEngineOpenAI, URL: es.url, Model: "tiny-reviews",
		MaxConcurrency: 3, AllowInsecureHTTP: true}).Env(t, vol)
	var log bytes.Buffer
	e.Log = &log
	sums, err := e.RunAll(RunHooks{})
	if err != nil {
		t.Fatalf("%v\nlog:\n%s", err, log.String())
	}
	if len(sums) != 2 {
		t.Fatalf("%d phases", len(sums))
	}
	for _, s := range sums {
		if s.Samples != 16 || s.Pairs+s.Ties+s.Identical != 8 {
			t.Fatalf("phase %d: counts %+v", s.Phase, s)
		}
	}
	// One completion request per prompt (8 per phase), one adapter load per phase, the
	// first phase's adapter unloaded when the second was loaded.
	if got := es.calls["/v1/completions"]; got != 16 {
		t.Errorf("%d completion requests, want 16", got)
	}
	if l, u := es.calls["/v1/load_lora_adapter"], es.calls["/v1/unload_lora_adapter"]; l != 2 || u != 1 {
		t.Errorf("%d adapter loads and %d unloads, want 2 and 1", l, u)
	}
	models := getJSON[struct{ Data []struct{ ID string } }](t, es.url+"/models", token)
	if len(models.Data) != 2 || models.Data[1].ID != engineAdapterName("remote", e.Run.UID, 2) {
		t.Errorf("served models after the run: %+v", models.Data)
	}

	// Phase 1's adapter again, under a name of the test's, to score phase 1's rows with.
	body, _ := json.Marshal(map[string]string{"lora_name": "check-p1", "lora_path": e.WS.BehaviorAdapterDir(1)})
	req, _ := http.NewRequest(http.MethodPost, es.url+"/load_lora_adapter", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	if res, err := http.DefaultClient.Do(req); err != nil || res.StatusCode != 200 {
		t.Fatalf("loading phase 1's adapter: %v %v", err, res)
	}
	adapters := map[int]string{1: "check-p1", 2: engineAdapterName("remote", e.Run.UID, 2)}
	for k := 1; k <= 2; k++ {
		rows, err := e.phaseSamples(k)
		if err != nil {
			t.Fatal(err)
		}
		distinct := map[string]bool{}
		ended := 0
		for _, row := range rows {
			for j, ids := range row.ResponseIDs {
				distinct[row.Responses[j]] = true
				resp := ids
				if n := len(ids); n > 0 && ids[n-1] == 256 {
					resp, ended = ids[:n-1], ended+1
				}
				if text, _ := json.Marshal(string(bytesOf(resp))); !bytes.Equal(text, mustJSON(t, row.Responses[j])) {
					t.Fatalf("phase %d row %d: text %q is not its token ids %v", k, row.Index, row.Responses[j], ids)
				}
				// The server's own log-prob of the same tokens (echo, no generation).
				lp := echoLogprob(t, es.url, token, adapters[k], row.PromptIDs, ids)
				if math.Abs(lp-row.BehaviorLogps[j]) > 1e-4 {
					t.Errorf("phase %d row %d sample %d: behavior log-prob %.6f, the server gives %.6f", k, row.Index, j, row.BehaviorLogps[j], lp)
				}
				if k == 1 && row.ReferenceLogps[j] != row.BehaviorLogps[j] {
					t.Errorf("phase 1: reference (behavior schedule) %v != behavior %v", row.ReferenceLogps[j], row.BehaviorLogps[j])
				}
			}
		}
		if len(distinct) < 8 {
			t.Errorf("phase %d: only %d distinct responses of 16", k, len(distinct))
		}
		t.Logf("phase %d: %d distinct responses, %d ended with end-of-text", k, len(distinct), ended)
	}
	if !strings.Contains(log.String(), "differ from the behavior model's by") {
		t.Errorf("no log-prob agreement in the log:\n%s", log.String())
	}
	t.Log(strings.TrimSpace(log.String()))
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func bytesOf(ids []int) []byte {
	b := make([]byte, len(ids))
	for i, id := range ids {
		b[i] = byte(id)
	}
	return b
}

// echoLogprob scores response after prompt on a served adapter with echo and max_tokens 0: the
// sum of the response tokens' log-probs, end-of-text included.
func echoLogprob(t *testing.T, url, token, adapter string, prompt, response []int) float64 {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"model": adapter, "prompt": append(append([]int{}, prompt...), response...),
		"max_tokens": 0, "echo": true, "logprobs": 0})
	req, _ := http.NewRequest(http.MethodPost, url+"/completions", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var c struct {
		Choices []struct {
			Logprobs struct {
				TokenLogprobs []*float64 `json:"token_logprobs"`
			} `json:"logprobs"`
		} `json:"choices"`
	}
	data, _ := io.ReadAll(res.Body)
	if err := json.Unmarshal(data, &c); err != nil || len(c.Choices) != 1 {
		t.Fatalf("echo: %v %s", err, data)
	}
	sum := 0.0
	for _, v := range c.Choices[0].Logprobs.TokenLogprobs[len(prompt):] {
		sum += *v
	}
	return sum
}

func getJSON[T any](t *testing.T, url, token string) T {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var v T
	if err := json.NewDecoder(res.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestSampleThroughServerFailures: what goes wrong with the server is an error that names the
// field to fix, and never holds the token.
func TestSampleThroughServerFailures(t *testing.T) {
	old := engineRetries
	engineRetries = 0
	t.Cleanup(func() { engineRetries = old })
	vol := t.TempDir()
	const token = "s3cret-sampler-token"
	withToken := startEngine(t, true, token)
	noLoRA := startEngine(t, false, "")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + l.Addr().String() + "/v1"
	l.Close()
	// A workspace folder the server reads another adapter from: a random one with large
	// factors, not the behavior model.
	other := t.TempDir()
	b, err := makeRun("x").Engine(nil).Env(t, vol).LoadBase()
	if err != nil {
		t.Fatal(err)
	}
	wrong := model.NewAdapter(b.Weights.Config, 2, 4, 99)
	for name, ten := range wrong.Tensors {
		for i := range ten.Data {
			ten.Data[i] = 0.5 * math.Sin(float64(i+len(name)))
		}
	}

	engine := func(url string) *v1alpha1.SamplerEngine {
		return &v1alpha1.SamplerEngine{Kind: v1alpha1.SamplerEngineOpenAI, URL: url, Model: "tiny-reviews", AllowInsecureHTTP: true}
	}
	cases := []struct {
		name    string
		engine  *v1alpha1.SamplerEngine
		token   string
		prepare func(e *Env)
		want    []string
	}{
		{"server down", engine(down), "", nil, []string{"spec.sampler.engine.url " + down, "GET /models"}},
		{"wrong token, echoed by the server", engine(withToken.url), "wrong-token-1234", nil,
			[]string{"spec.sampler.engine.url", "HTTP 401", "bad credentials", "[redacted]"}},
		{"token over plain http", &v1alpha1.SamplerEngine{Kind: v1alpha1.SamplerEngineOpenAI, URL: withToken.url, Model: "tiny-reviews"}, token, nil,
			[]string{"only sent over https://", "allowInsecureHTTP"}},
		{"model not served", &v1alpha1.SamplerEngine{Kind: v1alpha1.SamplerEngineOpenAI, URL: noLoRA.url, Model: "gpt2"}, "", nil,
			[]string{`spec.sampler.engine.model "gpt2" is not served`, "it serves tiny-reviews"}},
		{"runtime LoRA off", engine(noLoRA.url), "", nil, []string{"load_lora_adapter", "HTTP 404", "--enable-runtime-lora"}},
		{"workspacePath the server cannot read", &v1alpha1.SamplerEngine{Kind: v1alpha1.SamplerEngineOpenAI, URL: withToken.url, Model: "tiny-reviews",
			AllowInsecureHTTP: true, WorkspacePath: "/nonexistent"}, token, nil,
			[]string{"load_lora_adapter", "lora_path /nonexistent/", "spec.sampler.engine.workspacePath"}},
		{"the server serves another adapter", &v1alpha1.SamplerEngine{Kind: v1alpha1.SamplerEngineOpenAI, URL: withToken.url, Model: "tiny-reviews",
			AllowInsecureHTTP: true, WorkspacePath: other}, token, func(e *Env) {
			rel, _ := filepath.Rel(e.VolumeRoot, e.WS.BehaviorAdapterDir(1))
			if err := model.SavePEFT(filepath.Join(other, rel), wrong, b.Weights.Config, "tiny-reviews"); err != nil {
				t.Fatal(err)
			}
		}, []string{"spec.sampler.engine: the server's log-probs", "does not serve the behavior model"}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(v1alpha1.EnvSamplerToken, tc.token)
			e := makeRun(fmt.Sprintf("fail%d", i)).Engine(tc.engine).Env(t, vol)
			if tc.prepare != nil {
				tc.prepare(e)
			}
			_, err := e.Sample(1, 0, 1)
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			t.Log(msg)
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q lacks %q", msg, w)
				}
			}
			if strings.Contains(msg, token) || (tc.token != "" && strings.Contains(msg, tc.token)) {
				t.Errorf("error holds the token: %s", msg)
			}
			if _, done := e.Done(1, v1alpha1.StageSample, 0); done {
				t.Error("a failed shard wrote its done marker")
			}
		})
	}
}

// TestReadChoice: a choice becomes our row's token ids, with end-of-text appended exactly when
// the server stopped on its own, whichever way it says so.
func TestReadChoice(t *testing.T) {
	tok := tokenizer.Byte{}
	lp := func(tokens ...string) openai.CompletionChoiceLogprobs {
		l := openai.CompletionChoiceLogprobs{Tokens: tokens}
		for range tokens {
			l.TokenLogprobs = append(l.TokenLogprobs, -1)
		}
		return l
	}
	cases := []struct {
		name    string
		choice  openai.CompletionChoice
		want    []int
		lps     int
		wantErr string
	}{
		{"bpo serve: end-of-text not reported, finish stop", openai.CompletionChoice{Text: "hi", FinishReason: "stop", Logprobs: lp("token_id:104", "token_id:105")},
			[]int{104, 105, 256}, 2, ""},
		{"vLLM: end-of-text reported", openai.CompletionChoice{Text: "hi", FinishReason: "stop", Logprobs: lp("token_id:104", "token_id:105", "token_id:256")},
			[]int{104, 105, 256}, 2, ""},
		{"length", openai.CompletionChoice{Text: "hi!", FinishReason: "length", Logprobs: lp("token_id:104", "token_id:105", "token_id:33")},
			[]int{104, 105, 33}, 3, ""},
		{"tokens as text: the text tokenized, no log-probs", openai.CompletionChoice{Text: "ok", FinishReason: "length", Logprobs: lp("o", "k")},
			[]int{111, 107}, 0, ""},
		{"too long", openai.CompletionChoice{Text: "abcd", FinishReason: "length", Logprobs: lp("token_id:97", "token_id:98", "token_id:99", "token_id:100")},
			nil, 0, "more than spec.sampler.maxNewTokens 3"},
		{"not an id", openai.CompletionChoice{Text: "a", FinishReason: "length", Logprobs: lp("token_id:x")},
			nil, 0, `token "token_id:x" is not a token id`},
	}
	for _, tc := range cases {
		r, err := readChoice(tok, tc.choice, 3)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: %v, want %q", tc.name, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !slices.Equal(r.ids, tc.want) || len(r.lps) != tc.lps {
			t.Errorf("%s: %v %v (%d log-probs), want %v (%d)", tc.name, r.ids, err, len(r.lps), tc.want, tc.lps)
		}
	}
}

// TestPromptSeed: every prompt of a phase gets its own non-negative seed, the same on every ask.
func TestPromptSeed(t *testing.T) {
	seen := map[int64]bool{}
	for row := range 1000 {
		s := promptSeed(12345, row)
		if s < 0 || seen[s] || s != promptSeed(12345, row) {
			t.Fatalf("row %d: seed %d (negative, repeated or unstable)", row, s)
		}
		seen[s] = true
	}
}
