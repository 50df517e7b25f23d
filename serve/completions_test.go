package serve

import (
	"context"
	"math"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/bpo-dev/bpo/trainer/sample"
)

func TestModelsList(t *testing.T) {
	ts := startServer(t, Options{LoRA: map[string]string{"member-1": filepath.Join(tinyDir, "adapters", "member-1.safetensors")}}, nil)
	page, err := ts.client.Models.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range page.Data {
		ids = append(ids, m.ID)
		if m.Object != "model" || m.OwnedBy != "bpo" || m.Created == 0 {
			t.Errorf("model card %+v", m)
		}
	}
	if want := []string{"tiny-reviews", "member-1"}; !reflect.DeepEqual(ids, want) {
		t.Fatalf("models %v, want %v", ids, want)
	}
	if !strings.Contains(page.Data[1].RawJSON(), `"parent":"tiny-reviews"`) || !strings.Contains(page.Data[0].RawJSON(), `"max_model_len":128`) {
		t.Errorf("vLLM's fields: %s / %s", page.Data[0].RawJSON(), page.Data[1].RawJSON())
	}
}

// TestCompletionsAreTrainerSamples: a request's choices are exactly what trainer/sample draws
// for its prompts laid out prompt-major with the request's seed, and the same seed gives the same
// choices.
func TestCompletionsAreTrainerSamples(t *testing.T) {
	ts := startServer(t, Options{}, nil)
	_, inf, tok := tiny(t)
	prompts := []string{"The food was", "I bought this"}
	const n, maxTokens = 3, 12
	params := openai.CompletionNewParams{
		Model: "tiny-reviews", Prompt: strPrompt(prompts...), MaxTokens: openai.Int(maxTokens),
		N: openai.Int(n), Seed: openai.Int(7), Temperature: openai.Float(0.9), TopP: openai.Float(0.95),
	}
	c := ts.complete(t, params)
	var rows [][]int
	for _, p := range prompts {
		for k := 0; k < n; k++ {
			rows = append(rows, tok.Encode(p))
		}
	}
	want, err := sample.Generate(inf, rows, sample.Options{Temperature: 0.9, TopP: 0.95, MaxNewTokens: maxTokens, EOT: tok.EOT(), Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Choices) != len(rows) || c.Object != "text_completion" || c.Model != "tiny-reviews" {
		t.Fatalf("%d choices, object %q, model %q", len(c.Choices), c.Object, c.Model)
	}
	distinct := map[string]bool{}
	completionTokens := 0
	for i, ch := range c.Choices {
		if int(ch.Index) != i {
			t.Fatalf("choice %d has index %d", i, ch.Index)
		}
		if ch.Text != tok.Decode(want[i]) {
			t.Errorf("choice %d: %q, trainer/sample drew %q", i, ch.Text, tok.Decode(want[i]))
		}
		wantFinish := openai.CompletionChoiceFinishReasonLength
		if len(want[i]) < maxTokens {
			wantFinish = openai.CompletionChoiceFinishReasonStop // drew end-of-text
		}
		if ch.FinishReason != wantFinish {
			t.Errorf("choice %d: finish %q, want %q", i, ch.FinishReason, wantFinish)
		}
		distinct[ch.Text] = true
		completionTokens += len(want[i])
	}
	if len(distinct) < 4 {
		t.Errorf("only %d distinct choices of %d: the rows do not get their own random streams", len(distinct), len(rows))
	}
	if u := c.Usage; u.PromptTokens != int64(len("The food was")+len("I bought this")) || u.CompletionTokens != int64(completionTokens) || u.TotalTokens != u.PromptTokens+u.CompletionTokens {
		t.Errorf("usage %+v", u)
	}
	again := ts.complete(t, params)
	for i := range c.Choices {
		if again.Choices[i].Text != c.Choices[i].Text {
			t.Fatalf("seed 7 twice: choice %d %q then %q", i, c.Choices[i].Text, again.Choices[i].Text)
		}
	}
	params.Seed = openai.Int(8)
	other := ts.complete(t, params)
	same := 0
	for i := range c.Choices {
		if other.Choices[i].Text == c.Choices[i].Text {
			same++
		}
	}
	if same == len(c.Choices) {
		t.Fatal("seeds 7 and 8 drew the same choices")
	}
}

// TestLogprobsAreTrainerLogprobs: token_logprobs of the sampled tokens equal the trainer's own
// TokenLogProbs of the same tokens, top_logprobs hold the k most likely tokens and the chosen
// one, and text_offset indexes the text.
func TestLogprobsAreTrainerLogprobs(t *testing.T) {
	ts := startServer(t, Options{}, nil)
	_, inf, tok := tiny(t)
	const prompt = "This movie is"
	c := ts.complete(t, openai.CompletionNewParams{
		Model: "tiny-reviews", Prompt: strPrompt(prompt), MaxTokens: openai.Int(10), N: openai.Int(2),
		Seed: openai.Int(3), Logprobs: openai.Int(3),
	})
	for i, ch := range c.Choices {
		lp := ch.Logprobs
		gen := tok.Encode(ch.Text)
		want, err := inf.TokenLogProbs([][]int{tok.Encode(prompt)}, [][]int{gen})
		if err != nil {
			t.Fatal(err)
		}
		if len(lp.TokenLogprobs) != len(gen) || len(lp.Tokens) != len(gen) || len(lp.TopLogprobs) != len(gen) || len(lp.TextOffset) != len(gen) {
			t.Fatalf("choice %d: %d tokens of text, logprobs %+v", i, len(gen), lp)
		}
		for k, v := range lp.TokenLogprobs {
			if math.Abs(v-want[0][k]) > 1e-4 {
				t.Errorf("choice %d token %d: logprob %v, trainer %v", i, k, v, want[0][k])
			}
			if got := lp.TopLogprobs[k][lp.Tokens[k]]; got != v {
				t.Errorf("choice %d token %d: top_logprobs has %v for the chosen token, token_logprobs %v", i, k, got, v)
			}
			if n := len(lp.TopLogprobs[k]); n < 3 || n > 4 {
				t.Errorf("choice %d token %d: %d top_logprobs, want 3 (+ the chosen)", i, k, n)
			}
			if int(lp.TextOffset[k]) != k || lp.Tokens[k] != tokenString(tok, gen[k]) {
				t.Errorf("choice %d token %d: offset %d token %q", i, k, lp.TextOffset[k], lp.Tokens[k])
			}
		}
	}
	// Echo with max_tokens 0 scores the prompt: the first token has no logprob (null).
	e := ts.complete(t, openai.CompletionNewParams{
		Model: "tiny-reviews", Prompt: strPrompt(prompt), MaxTokens: openai.Int(0), Echo: openai.Bool(true), Logprobs: openai.Int(0),
	})
	ids := tok.Encode(prompt)
	want, _ := inf.TokenLogProbs([][]int{ids[:1]}, [][]int{ids[1:]})
	ch := e.Choices[0]
	if ch.Text != prompt || ch.FinishReason != "length" || len(ch.Logprobs.TokenLogprobs) != len(ids) {
		t.Fatalf("echo: %+v", ch)
	}
	if !strings.Contains(ch.Logprobs.RawJSON(), `"token_logprobs":[null,`) {
		t.Errorf("echo: first prompt token's logprob is not null: %s", ch.Logprobs.RawJSON())
	}
	for k := 1; k < len(ids); k++ {
		if math.Abs(ch.Logprobs.TokenLogprobs[k]-want[0][k-1]) > 1e-4 {
			t.Errorf("echo token %d: %v, trainer %v", k, ch.Logprobs.TokenLogprobs[k], want[0][k-1])
		}
	}
}

func TestStopSequences(t *testing.T) {
	ts := startServer(t, Options{}, nil)
	greedy := func(stop openai.CompletionNewParamsStopUnion) openai.CompletionChoice {
		return ts.complete(t, openai.CompletionNewParams{
			Model: "tiny-reviews", Prompt: strPrompt("The service"), MaxTokens: openai.Int(40),
			Temperature: openai.Float(0), Stop: stop,
		}).Choices[0]
	}
	full := greedy(openai.CompletionNewParamsStopUnion{})
	if full.FinishReason != "length" || len(full.Text) != 40 {
		t.Fatalf("greedy without stop: %+v (the test needs a 40-byte continuation)", full)
	}
	stop := full.Text[10:13]
	cut := strings.Index(full.Text, stop)
	got := greedy(openai.CompletionNewParamsStopUnion{OfStringArray: []string{"never-there", stop}})
	if got.Text != full.Text[:cut] || got.FinishReason != "stop" {
		t.Fatalf("stop %q: %q (%s), want %q", stop, got.Text, got.FinishReason, full.Text[:cut])
	}
	if got := greedy(openai.CompletionNewParamsStopUnion{OfString: openai.String("never-there")}); got.Text != full.Text || got.FinishReason != "length" {
		t.Fatalf("absent stop: %q (%s)", got.Text, got.FinishReason)
	}
}

// TestTokenPrompts: token-id prompts (one, and a batch) give the text prompt's completion.
func TestTokenPrompts(t *testing.T) {
	ts := startServer(t, Options{}, nil)
	_, _, tok := tiny(t)
	p := openai.CompletionNewParams{Model: "tiny-reviews", Prompt: strPrompt("Great"), MaxTokens: openai.Int(8), Seed: openai.Int(1)}
	text := ts.complete(t, p).Choices[0].Text
	var ids []int64
	for _, id := range tok.Encode("Great") {
		ids = append(ids, int64(id))
	}
	p.Prompt = openai.CompletionNewParamsPromptUnion{OfArrayOfTokens: ids}
	if got := ts.complete(t, p).Choices[0].Text; got != text {
		t.Errorf("token prompt: %q, text prompt %q", got, text)
	}
	p.Prompt = openai.CompletionNewParamsPromptUnion{OfArrayOfTokenArrays: [][]int64{ids, ids}}
	c := ts.complete(t, p)
	if len(c.Choices) != 2 || c.Choices[0].Text != text {
		t.Errorf("token-array prompts: %+v", c.Choices)
	}
}

// TestTopKAndTokenIDs: vLLM's top_k and return_tokens_as_token_ids. The choices are what
// trainer/sample draws with the same top-k, and the logprobs tokens spell their exact ids.
func TestTopKAndTokenIDs(t *testing.T) {
	ts := startServer(t, Options{}, nil)
	_, inf, tok := tiny(t)
	const n, maxTokens, topK = 4, 10, 3
	c, err := ts.client.Completions.New(context.Background(), openai.CompletionNewParams{
		Model: "tiny-reviews", Prompt: strPrompt("The food was"), MaxTokens: openai.Int(maxTokens),
		N: openai.Int(n), Seed: openai.Int(5), Temperature: openai.Float(1.5), Logprobs: openai.Int(1),
	}, option.WithJSONSet("top_k", topK), option.WithJSONSet("return_tokens_as_token_ids", true))
	if err != nil {
		t.Fatal(err)
	}
	rows := make([][]int, n)
	for i := range rows {
		rows[i] = tok.Encode("The food was")
	}
	want, err := sample.Generate(inf, rows, sample.Options{Temperature: 1.5, TopK: topK, MaxNewTokens: maxTokens, EOT: tok.EOT(), Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	for i, ch := range c.Choices {
		var ids []int
		for _, s := range ch.Logprobs.Tokens {
			id, err := strconv.Atoi(strings.TrimPrefix(s, "token_id:"))
			if !strings.HasPrefix(s, "token_id:") || err != nil {
				t.Fatalf("choice %d: token %q is not spelt token_id:<id>", i, s)
			}
			ids = append(ids, id)
		}
		if g := want[i]; !slices.Equal(ids, g) || ch.Text != tok.Decode(g) {
			t.Errorf("choice %d: ids %v text %q, trainer/sample with top-k %d drew %v", i, ids, ch.Text, topK, g)
		}
		for j, top := range ch.Logprobs.TopLogprobs {
			for key := range top {
				if !strings.HasPrefix(key, "token_id:") {
					t.Errorf("choice %d token %d: top_logprobs key %q", i, j, key)
				}
			}
		}
	}
	// top_k below -1 is refused by name.
	if code, body := ts.post(t, "/v1/completions", `{"model": "tiny-reviews", "prompt": "a", "top_k": -2}`); code != 400 || errorOf(t, body).Param == nil || *errorOf(t, body).Param != "top_k" {
		t.Errorf("top_k -2: %d %s", code, body)
	}
}
