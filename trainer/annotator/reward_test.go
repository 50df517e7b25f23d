package annotator_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/bpo-dev/bpo/trainer/annotator"
	"github.com/bpo-dev/bpo/trainer/annotator/annotatortest"
)

var rmItems = []annotator.Item{
	{Prompt: "The food", Responses: []string{" was great and the staff were friendly.", " was cold and the staff were rude."}},
	{Prompt: "The film", Responses: []string{" was dull.", " was a delight from start to end.", " ran two hours."}},
}

// rmWords is the test vLLM server's token count of rmItems: the words of prompt + response.
func rmWords() (n int64) {
	for _, it := range rmItems {
		for _, r := range it.Responses {
			n += int64(len(strings.Fields(it.Prompt + r)))
		}
	}
	return n
}

// wantRewards is the test servers' rule: the sentiment score of prompt + response.
func wantRewards() [][]float64 {
	s := annotatortest.Sentiment()
	var out [][]float64
	for _, it := range rmItems {
		var r []float64
		for _, resp := range it.Responses {
			r = append(r, s(it.Prompt+resp))
		}
		out = append(out, r)
	}
	return out
}

func newRM(t *testing.T, cfg annotator.RewardModelConfig) *annotator.RewardModel {
	t.Helper()
	cfg.Retry.Backoff = time.Millisecond
	m, err := annotator.NewRewardModel(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestRewardModelOpenRLHF(t *testing.T) {
	srv := &annotatortest.OpenRLHF{Common: annotatortest.Common{Token: "rm-token", Fault: annotatortest.FirstN(1, annotatortest.Fault{Status: 503, Body: "loading"})}}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	m := newRM(t, annotator.RewardModelConfig{Protocol: annotator.ProtocolOpenRLHF, URL: ts.URL + "/get_reward", Token: "rm-token", BatchSize: 2})
	got := score(t, m, rmItems...)
	if want := wantRewards(); !reflect.DeepEqual(got, want) {
		t.Errorf("rewards %v, want %v", got, want)
	}
	// 5 texts in batches of 2: 3 requests, and the 503 retried.
	if a := m.Accounting(); a.Texts != 5 || a.Requests != 4 || srv.Requests() != 4 || a.PromptTokens != 0 {
		t.Errorf("accounting %+v, server %d requests; want 5 texts, 4 requests, no tokens", a, srv.Requests())
	}
}

func TestRewardModelVLLMPooling(t *testing.T) {
	for _, tokenWise := range []bool{false, true} {
		srv := &annotatortest.VLLMPooling{TokenWise: tokenWise, Model: "rm"}
		ts := httptest.NewServer(srv)
		m := newRM(t, annotator.RewardModelConfig{Protocol: annotator.ProtocolVLLMPooling, URL: ts.URL + "/pooling", Model: "rm", Task: "classify"})
		got := score(t, m, rmItems...)
		if want := wantRewards(); !reflect.DeepEqual(got, want) {
			t.Errorf("token-wise %v: rewards %v, want %v", tokenWise, got, want)
		}
		// usage.prompt_tokens: the test server counts words.
		if a := m.Accounting(); a.Texts != 5 || a.Requests != 1 || a.PromptTokens != rmWords() {
			t.Errorf("token-wise %v: accounting %+v, want 5 texts, 1 request, %d prompt tokens", tokenWise, a, rmWords())
		}
		// A model the server does not serve: its 404, not retried.
		m = newRM(t, annotator.RewardModelConfig{Protocol: annotator.ProtocolVLLMPooling, URL: ts.URL + "/pooling", Model: "other"})
		_, err := m.ScoreBatch(context.Background(), rmItems)
		if err == nil || !strings.Contains(err.Error(), "HTTP 404") || !strings.Contains(err.Error(), "`other` does not exist") {
			t.Errorf("err %v", err)
		}
		ts.Close()
	}
}

func TestRewardModelBadAnswers(t *testing.T) {
	for name, c := range map[string]struct{ protocol, body, want string }{
		"openrlhf count":     {annotator.ProtocolOpenRLHF, `{"rewards": [1]}`, "answer has 1 rewards for 2 texts"},
		"openrlhf null":      {annotator.ProtocolOpenRLHF, `{"rewards": [1, null]}`, "text 1: reward null is not a finite number"},
		"openrlhf html":      {annotator.ProtocolOpenRLHF, `<html>`, `answer is not {"rewards": [...]}`},
		"vllm classes":       {annotator.ProtocolVLLMPooling, `{"data": [{"index": 0, "data": [0.3, 0.7]}, {"index": 1, "data": [0.5, 0.5]}]}`, "pooling data has 2 values, a reward model gives 1"},
		"vllm repeated":      {annotator.ProtocolVLLMPooling, `{"data": [{"index": 0, "data": [1]}, {"index": 0, "data": [2]}]}`, "index 0 is out of range or repeated"},
		"vllm count":         {annotator.ProtocolVLLMPooling, `{"data": [{"index": 0, "data": [1]}]}`, "1 data entries for 2 texts"},
		"vllm embedding str": {annotator.ProtocolVLLMPooling, `{"data": [{"index": 0, "data": "AAAA"}, {"index": 1, "data": "AAAA"}]}`, "is neither [r] nor"},
		"vllm empty rows":    {annotator.ProtocolVLLMPooling, `{"data": [{"index": 0, "data": []}, {"index": 1, "data": []}]}`, "pooling data has 0 values"},
	} {
		ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(c.body)) }))
		m := newRM(t, annotator.RewardModelConfig{Protocol: c.protocol, URL: ts.URL})
		_, err := m.ScoreBatch(context.Background(), []annotator.Item{{Prompt: "p", Responses: []string{"a", "b"}}})
		ts.Close()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want %q", name, err, c.want)
		}
	}
}

func TestRewardModelLimits(t *testing.T) {
	srv := &annotatortest.VLLMPooling{}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	// rmWords() (36) tokens a call: the budget of 20 is spent by the first.
	m := newRM(t, annotator.RewardModelConfig{Protocol: annotator.ProtocolVLLMPooling, URL: ts.URL + "/pooling", Limits: annotator.Limits{MaxTokens: 20}})
	score(t, m, rmItems...)
	_, err := m.ScoreBatch(context.Background(), rmItems)
	if !errors.Is(err, annotator.ErrBudgetExceeded) || !strings.Contains(err.Error(), fmt.Sprintf("%d tokens used, limit MaxTokens is 20; raise MaxTokens", rmWords())) {
		t.Errorf("err %v", err)
	}
	if srv.Requests() != 1 {
		t.Errorf("%d requests, want 1", srv.Requests())
	}
	_, err = annotator.NewRewardModel(annotator.RewardModelConfig{Protocol: annotator.ProtocolOpenRLHF, URL: ts.URL, Limits: annotator.Limits{TokensPerMinute: 100}})
	if err == nil || !strings.Contains(err.Error(), "reports no token usage") {
		t.Errorf("OpenRLHF with a token limit: err %v", err)
	}
}

func TestRewardModelConfigErrors(t *testing.T) {
	for _, c := range []struct {
		cfg  annotator.RewardModelConfig
		want string
	}{
		{annotator.RewardModelConfig{URL: "http://rm/pooling"}, `reward model Protocol "": use OpenRLHF or VLLMPooling`},
		{annotator.RewardModelConfig{Protocol: "TGI", URL: "http://rm"}, `Protocol "TGI"`},
		{annotator.RewardModelConfig{Protocol: annotator.ProtocolVLLMPooling}, `reward model URL ""`},
		{annotator.RewardModelConfig{Protocol: annotator.ProtocolOpenRLHF, URL: "http://rm", Model: "x"}, "Model and Task are VLLMPooling settings"},
		{annotator.RewardModelConfig{Protocol: annotator.ProtocolVLLMPooling, URL: "http://rm", BatchSize: -1}, "BatchSize -1"},
	} {
		if _, err := annotator.NewRewardModel(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: err %v, want %q", c.cfg, err, c.want)
		}
	}
}
