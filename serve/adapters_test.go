package serve

import (
	"context"
	"errors"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"

	"github.com/bpo-dev/bpo/trainer/model"
)

// TestEnsembleAdapterServesTheDenseMerge: the ensemble written as one PEFT adapter (model.SavePEFT
// of model.EnsembleAdapter), loaded at run time, changes the base model's outputs and serves the
// same completions and log-probabilities as the dense merged checkpoint the trainer writes.
func TestEnsembleAdapterServesTheDenseMerge(t *testing.T) {
	ts := startServer(t, Options{RuntimeLoRA: true}, nil)
	w, _, _ := tiny(t)
	members := tinyMembers(t, w.Config, 3)
	ens, err := model.EnsembleAdapter(members)
	if err != nil {
		t.Fatal(err)
	}
	adapterDir := filepath.Join(t.TempDir(), "policy-adapter")
	if err := model.SavePEFT(adapterDir, ens, w.Config, tinyDir); err != nil {
		t.Fatal(err)
	}
	// The dense merged model, as pipeline's Policy() materialises it, served by a second server.
	denseDir := filepath.Join(t.TempDir(), "policy-dense")
	if err := model.SaveWeights(denseDir, model.MergeMean(w, members)); err != nil {
		t.Fatal(err)
	}
	tc, err := os.ReadFile(filepath.Join(tinyDir, "tokenizer_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(denseDir, "tokenizer_config.json"), tc, 0o644); err != nil {
		t.Fatal(err)
	}
	dense := startServer(t, Options{ModelDir: denseDir}, nil)

	if code, body := ts.post(t, "/v1/load_lora_adapter", map[string]string{"lora_name": "policy", "lora_path": adapterDir}); code != 200 || string(body) != "Success: LoRA adapter 'policy' added successfully." {
		t.Fatalf("load: %d %s", code, body)
	}
	page, err := ts.client.Models.List(context.Background())
	if err != nil || len(page.Data) != 2 || page.Data[1].ID != "policy" {
		t.Fatalf("models after load: %v %+v", err, page)
	}
	req := func(model string, temperature float64) openai.CompletionNewParams {
		return openai.CompletionNewParams{
			Model: openai.CompletionNewParamsModel(model), Prompt: strPrompt("The food was", "I hated"),
			MaxTokens: openai.Int(16), N: openai.Int(2), Seed: openai.Int(11), Temperature: openai.Float(temperature), Logprobs: openai.Int(1),
		}
	}
	for _, temp := range []float64{0, 1} {
		got := ts.complete(t, req("policy", temp))
		want := dense.complete(t, req("policy-dense", temp))
		base := ts.complete(t, req("tiny-reviews", temp))
		differs := false
		for i, ch := range got.Choices {
			if ch.Text != want.Choices[i].Text {
				t.Fatalf("temperature %g choice %d: adapter %q, dense merge %q", temp, i, ch.Text, want.Choices[i].Text)
			}
			for k, v := range ch.Logprobs.TokenLogprobs {
				if math.Abs(v-want.Choices[i].Logprobs.TokenLogprobs[k]) > 1e-5 {
					t.Fatalf("temperature %g choice %d token %d: adapter logprob %v, dense %v", temp, i, k, v, want.Choices[i].Logprobs.TokenLogprobs[k])
				}
			}
			b := base.Choices[i]
			if b.Text != ch.Text || len(b.Logprobs.TokenLogprobs) == 0 || b.Logprobs.TokenLogprobs[0] != ch.Logprobs.TokenLogprobs[0] {
				differs = true
			}
		}
		if !differs {
			t.Fatalf("temperature %g: the adapter changes nothing", temp)
		}
	}

	// Unload: the name is gone (404 naming model), a second unload is 404, the base still serves.
	if code, body := ts.post(t, "/v1/unload_lora_adapter", map[string]string{"lora_name": "policy"}); code != 200 || string(body) != "Success: LoRA adapter 'policy' removed successfully." {
		t.Fatalf("unload: %d %s", code, body)
	}
	_, err = ts.client.Completions.New(context.Background(), req("policy", 0))
	var ae *openai.Error
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusNotFound || ae.Param != "model" || ae.Code != "model_not_found" {
		t.Fatalf("completion on an unloaded adapter: %v %s", err, apiErrorBody(err))
	}
	if code, body := ts.post(t, "/v1/unload_lora_adapter", map[string]string{"lora_name": "policy"}); code != 404 || errorOf(t, body).Code == nil {
		t.Fatalf("second unload: %d %s", code, body)
	}
	ts.complete(t, req("tiny-reviews", 0))
}

func TestAdapterAPIErrors(t *testing.T) {
	ts := startServer(t, Options{RuntimeLoRA: true}, nil)
	member := filepath.Join(tinyDir, "adapters", "member-0.safetensors")
	if code, body := ts.post(t, "/v1/load_lora_adapter", map[string]string{"lora_name": "m0", "lora_path": member}); code != 200 {
		t.Fatalf("load a trainer adapter file: %d %s", code, body)
	}
	badPEFT := t.TempDir()
	if err := os.WriteFile(filepath.Join(badPEFT, "adapter_config.json"), []byte(`{"peft_type": "IA3"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, path string
		body       any
		status     int
		param      string
		contains   string
	}{
		{"duplicate", "/v1/load_lora_adapter", map[string]string{"lora_name": "m0", "lora_path": member}, 400, "lora_name", "has already been loaded"},
		{"base name", "/v1/load_lora_adapter", map[string]string{"lora_name": "tiny-reviews", "lora_path": member}, 400, "lora_name", "has already been loaded"},
		{"no path", "/v1/load_lora_adapter", map[string]string{"lora_name": "x"}, 400, "lora_path", "both lora_name and lora_path"},
		{"no name", "/v1/load_lora_adapter", map[string]string{"lora_path": member}, 400, "lora_name", "both lora_name and lora_path"},
		{"missing", "/v1/load_lora_adapter", map[string]string{"lora_name": "x", "lora_path": "/nonexistent/adapter"}, 404, "lora_path", "no adapter found"},
		{"not LoRA", "/v1/load_lora_adapter", map[string]string{"lora_name": "x", "lora_path": badPEFT}, 400, "lora_path", `peft_type "IA3" is not supported`},
		{"bad json", "/v1/load_lora_adapter", `{"lora_name": 3}`, 400, "lora_name", "want a string"},
		{"unload base", "/v1/unload_lora_adapter", map[string]string{"lora_name": "tiny-reviews"}, 400, "lora_name", "is the base model"},
		{"unload unknown", "/v1/unload_lora_adapter", map[string]string{"lora_name": "nope"}, 404, "lora_name", "cannot be found"},
	} {
		code, body := ts.post(t, c.path, c.body)
		e := errorOf(t, body)
		if code != c.status || deref(e.Param) != c.param || !strings.Contains(e.Message, c.contains) {
			t.Errorf("%s: %d %s, want %d param %q containing %q", c.name, code, body, c.status, c.param, c.contains)
		}
	}
	// Off unless enabled.
	off := startServer(t, Options{}, nil)
	code, body := off.post(t, "/v1/load_lora_adapter", map[string]string{"lora_name": "x", "lora_path": member})
	if e := errorOf(t, body); code != 404 || deref(e.Code) != "runtime_lora_disabled" {
		t.Fatalf("runtime loading disabled: %d %s", code, body)
	}
}
