package pipeline

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/trainer/annotator"
)

// TestHTTPAnnotatorRun: a run whose annotator is an HTTP scoring service labels and
// evaluates through it (with the token from $BPO_ANNOTATOR_TOKEN), and a service that
// refuses fails the stage with the service's words.
func TestHTTPAnnotatorRun(t *testing.T) {
	var calls atomic.Int32
	var refuse atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if r.Header.Get("Authorization") != "Bearer tok-123" {
			http.Error(w, "missing token", http.StatusUnauthorized)
			return
		}
		if refuse.Load() {
			http.Error(w, "model not loaded", http.StatusNotFound)
			return
		}
		var req struct {
			Items []struct {
				Prompt    string   `json:"prompt"`
				Responses []string `json:"responses"`
			} `json:"items"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		scores := make([][]float64, len(req.Items))
		for i, it := range req.Items {
			for _, s := range it.Responses {
				scores[i] = append(scores[i], letterScorer{}.Score(it.Prompt, s))
			}
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"scores": scores})
	}))
	defer srv.Close()
	t.Setenv(v1alpha1.EnvAnnotatorToken, "tok-123")

	vol := newVolume(t)
	b := makeRun("remote")
	// httptest serves plain http: the token may only go there with the explicit opt-out.
	b.ar.Spec.Labeler.Annotator = &v1alpha1.AnnotatorSpec{Kind: v1alpha1.AnnotatorHTTP, URL: srv.URL, AllowInsecureHTTP: true}
	e := b.Env(t, vol)
	e.Scorer = nil // use the spec's annotator

	// The same run with the in-process scorer, on the text as the service receives it, gives
	// the reference numbers.
	ref := makeRun("remote").Env(t, newVolume(t))
	ref.Scorer = utf8Letters{}
	refSums, err := ref.RunAll(RunHooks{})
	if err != nil {
		t.Fatal(err)
	}
	sums, err := e.RunAll(RunHooks{})
	if err != nil {
		t.Fatal(err)
	}
	if calls.Load() == 0 {
		t.Fatal("the service was never called")
	}
	for k := range sums {
		if sums[k].Pairs != refSums[k].Pairs || sums[k].Ties != refSums[k].Ties {
			t.Errorf("phase %d: pairs %d ties %d through HTTP, %d %d in process", k+1, sums[k].Pairs, sums[k].Ties, refSums[k].Pairs, refSums[k].Ties)
		}
	}
	got, err := e.LoadEval(2)
	if err != nil {
		t.Fatal(err)
	}
	want, err := ref.LoadEval(2)
	if err != nil {
		t.Fatal(err)
	}
	if got.WinRate != want.WinRate || got.GoldReward != want.GoldReward {
		t.Errorf("eval through HTTP: win %v gold %v; in process: %v %v", got.WinRate, got.GoldReward, want.WinRate, want.GoldReward)
	}

	// A refusing service fails the label stage, naming the field and quoting the service.
	refuse.Store(true)
	f := b.Env(t, newVolume(t))
	f.Scorer = nil
	if _, err := f.Sample(1, 0, 1); err != nil {
		t.Fatal(err)
	}
	_, err = f.Label(1, 0, 1)
	if err == nil || !strings.Contains(err.Error(), "spec.labeler.annotator") || !strings.Contains(err.Error(), "HTTP 404: model not loaded") {
		t.Fatalf("label with a refusing service: %v", err)
	}
}

// utf8Letters is letterScorer on the text an HTTP annotator receives (invalid bytes as U+FFFD).
type utf8Letters struct{}

func (utf8Letters) Name() string { return "letters-utf8" }
func (utf8Letters) Score(p, r string) float64 {
	return letterScorer{}.Score(p, annotator.ValidUTF8(r))
}

// A token is never sent over plain http without the opt-out: the stage refuses before any request.
func TestHTTPAnnotatorTokenNeedsHTTPS(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { calls.Add(1) }))
	defer srv.Close()
	t.Setenv(v1alpha1.EnvAnnotatorToken, "tok-123")
	b := makeRun("plain")
	b.ar.Spec.Labeler.Annotator = &v1alpha1.AnnotatorSpec{Kind: v1alpha1.AnnotatorHTTP, URL: srv.URL}
	e := b.Env(t, newVolume(t))
	e.Scorer = nil
	if _, err := e.Annotator(1, v1alpha1.StageLabel, 0); err == nil || !strings.Contains(err.Error(), "allowInsecureHTTP") {
		t.Fatalf("Annotator() over http with a token: err = %v, want one naming allowInsecureHTTP", err)
	}
	if calls.Load() != 0 {
		t.Fatal("the token was sent")
	}
}

// A service that echoes the Authorization header into its error body: the stage's error, its
// termination message and its log line carry no token.
func TestAnnotatorErrorsCarryNoToken(t *testing.T) {
	const token = "s3cret-token-value"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "forbidden, you sent: Authorization: "+r.Header.Get("Authorization"), http.StatusForbidden)
	}))
	defer srv.Close()
	t.Setenv(v1alpha1.EnvAnnotatorToken, token)
	b := makeRun("echo")
	b.ar.Spec.Labeler.Annotator = &v1alpha1.AnnotatorSpec{Kind: v1alpha1.AnnotatorHTTP, URL: srv.URL, AllowInsecureHTTP: true}
	e := b.Env(t, newVolume(t))
	e.Scorer = nil
	if _, err := e.Sample(1, 0, 1); err != nil {
		t.Fatal(err)
	}
	_, err := e.Label(1, 0, 1)
	if err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("label against a 403 service: err = %v", err)
	}
	data, encErr := EncodeResult(v1alpha1.StageResult{Stage: "label", Message: err.Error()})
	if encErr != nil {
		t.Fatal(encErr)
	}
	if strings.Contains(string(data), token) || !strings.Contains(string(data), "[redacted]") {
		t.Fatalf("termination message %s: the token must be redacted", data)
	}
	if got := Redact("auth: Bearer abc.def-ghi, next"); got != "auth: Bearer [redacted], next" {
		t.Errorf("Redact of a bearer header = %q", got)
	}
}
