package serve

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/bpo-dev/bpo/trainer/model"
	"github.com/bpo-dev/bpo/trainer/tokenizer"
)

// tinyDir is the smallest bundled model: byte tokenizer, 2 layers, context 128.
const tinyDir = "../trainer/task/models/tiny-reviews"

type testServer struct {
	s      *Server
	url    string
	client openai.Client
}

// startServer serves opts (ModelDir defaults to tiny-reviews) on loopback; hook, if not nil, is
// the engines' beforeStep.
func startServer(t *testing.T, opts Options, hook func()) *testServer {
	t.Helper()
	if opts.ModelDir == "" {
		opts.ModelDir = tinyDir
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	s.beforeStep = hook
	if err := s.Load(); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
		hs.Close()
	})
	return &testServer{s: s, url: hs.URL, client: openai.NewClient(
		option.WithBaseURL(hs.URL+"/v1/"), option.WithAPIKey("unused"), option.WithMaxRetries(0))}
}

// complete sends a completion request with the official client.
func (ts *testServer) complete(t *testing.T, p openai.CompletionNewParams) *openai.Completion {
	t.Helper()
	c, err := ts.client.Completions.New(context.Background(), p)
	if err != nil {
		t.Fatalf("completion: %v (%s)", err, apiErrorBody(err))
	}
	return c
}

func apiErrorBody(err error) string {
	var ae *openai.Error
	if errors.As(err, &ae) {
		return ae.RawJSON()
	}
	return ""
}

// post sends a raw JSON body and returns the status and body.
func (ts *testServer) post(t *testing.T, path string, body any) (int, []byte) {
	t.Helper()
	var b []byte
	switch v := body.(type) {
	case string:
		b = []byte(v)
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			t.Fatal(err)
		}
	}
	res, err := http.Post(ts.url+path, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	out, _ := io.ReadAll(res.Body)
	return res.StatusCode, out
}

func (ts *testServer) get(t *testing.T, path string) (int, []byte) {
	t.Helper()
	res, err := http.Get(ts.url + path)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	out, _ := io.ReadAll(res.Body)
	return res.StatusCode, out
}

// errorOf parses an OpenAI-style error body.
func errorOf(t *testing.T, body []byte) apiError {
	t.Helper()
	var e struct {
		Error *apiError `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error == nil {
		t.Fatalf("not an OpenAI error body: %s", body)
	}
	return *e.Error
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// tiny loads the bundled model's weights, its inference path and tokenizer.
func tiny(t *testing.T) (*model.Weights, *model.Inference, tokenizer.Tokenizer) {
	t.Helper()
	w, err := model.LoadWeights(tinyDir)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.FromDir(tinyDir)
	if err != nil {
		t.Fatal(err)
	}
	return w, model.NewInference(w), tok
}

// tinyMembers are the bundled model's first n SFT adapters.
func tinyMembers(t *testing.T, cfg model.Config, n int) []*model.Adapter {
	t.Helper()
	var ms []*model.Adapter
	for m := 0; m < n; m++ {
		a, err := model.LoadAdapterFor(filepath.Join(tinyDir, "adapters", "member-"+string(rune('0'+m))+".safetensors"), cfg)
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, a)
	}
	return ms
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func (s *Server) queuedNow() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queued
}

func strPrompt(ps ...string) openai.CompletionNewParamsPromptUnion {
	if len(ps) == 1 {
		return openai.CompletionNewParamsPromptUnion{OfString: openai.String(ps[0])}
	}
	return openai.CompletionNewParamsPromptUnion{OfArrayOfStrings: ps}
}
