package annotatortest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
)

// post sends body to h and decodes the JSON answer.
func post(t *testing.T, h http.Handler, path, token, body string) (int, map[string]any) {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodPost, srv.URL+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatalf("%s: %v", data, err)
	}
	return resp.StatusCode, out
}

// roundTrip re-encodes v so that it can be compared with decoded JSON.
func roundTrip(v any) any {
	b, _ := json.Marshal(v)
	var out any
	_ = json.NewDecoder(bytes.NewReader(b)).Decode(&out)
	return out
}

// The servers answer the requests their projects document, in the documented shapes.

func TestOpenRLHFShape(t *testing.T) {
	// openrlhf's example: curl -X POST http://localhost:8000/get_reward -d '{"query": [...], "prompts": [...]}'
	code, out := post(t, &OpenRLHF{}, "/get_reward", "", `{"query": ["Hello world"], "prompts": ["Hi there"]}`)
	if want := roundTrip(map[string]any{"rewards": []float64{Sentiment()("Hello world")}}); code != 200 || !reflect.DeepEqual(any(out), want) {
		t.Errorf("%d %v, want %v", code, out, want)
	}
}

func TestVLLMPoolingShape(t *testing.T) {
	// vLLM's pooling example: {"model": model, "input": "vLLM is great!"}.
	code, out := post(t, &VLLMPooling{}, "/pooling", "", `{"model": "rm", "input": "vLLM is great!"}`)
	if code != 200 || out["object"] != "list" || out["model"] != "rm" {
		t.Fatalf("%d %v", code, out)
	}
	data := out["data"].([]any)
	d := data[0].(map[string]any)
	if len(data) != 1 || d["index"] != 0.0 || d["object"] != "pooling" || !reflect.DeepEqual(d["data"], []any{Sentiment()("vLLM is great!")}) {
		t.Errorf("data %v", data)
	}
	if u := out["usage"].(map[string]any); u["prompt_tokens"] != 3.0 || u["total_tokens"] != 3.0 {
		t.Errorf("usage %v", u)
	}
	_, out = post(t, &VLLMPooling{TokenWise: true}, "/pooling", "", `{"input": ["a b c"], "task": "token_classify"}`)
	rows := out["data"].([]any)[0].(map[string]any)["data"].([]any)
	if len(rows) != 3 || !reflect.DeepEqual(rows[2], []any{Sentiment()("a b c")}) {
		t.Errorf("token-wise data %v", rows)
	}
}

func TestJudgeShape(t *testing.T) {
	prompt := "Which is better?\n<A>\nThe food was great.\n</A>\nor\n<B>\nThe food was awful.\n</B>\n"
	body, _ := json.Marshal(map[string]any{"model": "j", "messages": []any{map[string]string{"role": "user", "content": prompt}}, "temperature": 0, "max_tokens": 8})
	code, out := post(t, &Judge{}, "/v1/chat/completions", "", string(body))
	if code != 200 || out["object"] != "chat.completion" {
		t.Fatalf("%d %v", code, out)
	}
	msg := out["choices"].([]any)[0].(map[string]any)["message"].(map[string]any)
	if msg["role"] != "assistant" || msg["content"] != "A" {
		t.Errorf("message %v, want A", msg)
	}
	if u := out["usage"].(map[string]any); u["prompt_tokens"] != float64(len(strings.Fields(prompt))) || u["completion_tokens"] != 1.0 {
		t.Errorf("usage %v", u)
	}
	// With response_format, the JSON verdict; the other order says B.
	swapped := strings.NewReplacer("great", "awful", "awful", "great").Replace(prompt)
	body, _ = json.Marshal(map[string]any{"model": "j", "messages": []any{map[string]string{"role": "user", "content": swapped}},
		"response_format": map[string]any{"type": "json_schema", "json_schema": map[string]any{"name": "verdict", "schema": map[string]any{}}}})
	_, out = post(t, &Judge{}, "/v1/chat/completions", "", string(body))
	if c := out["choices"].([]any)[0].(map[string]any)["message"].(map[string]any)["content"]; c != `{"verdict":"B"}` {
		t.Errorf("structured content %v", c)
	}
}

func TestFaultsAndToken(t *testing.T) {
	j := &Judge{Common: Common{Token: "t0k", Fault: FirstN(1, Fault{Status: 429, RetryAfter: "2", Body: "slow down"})}}
	srv := httptest.NewServer(j)
	defer srv.Close()
	ask := func(token string) *http.Response {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/chat/completions", strings.NewReader(`{"model":"j","messages":[{"role":"user","content":"\n<A>\nx\n</A>\n<B>\ny\n</B>\n"}]}`))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if r := ask("wrong"); r.StatusCode != 401 {
		t.Errorf("wrong token: %d", r.StatusCode)
	}
	if r := ask("t0k"); r.StatusCode != 200 { // request 1 was the 401: the fault is spent
		t.Errorf("second request: %d", r.StatusCode)
	}
	j.Fault = FirstN(10, Fault{Status: 429, RetryAfter: "2"})
	if r := ask("t0k"); r.StatusCode != 429 || r.Header.Get("Retry-After") != "2" {
		t.Errorf("fault: %d %q", r.StatusCode, r.Header.Get("Retry-After"))
	}
	if j.Requests() != 3 {
		t.Errorf("%d requests counted, want 3", j.Requests())
	}
}
