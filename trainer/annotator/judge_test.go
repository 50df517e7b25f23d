package annotator_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/bpo-dev/bpo/trainer/annotator"
	"github.com/bpo-dev/bpo/trainer/annotator/annotatortest"
)

// byLength rates a response by its length: a rule whose ties and orders are plain to see.
func byLength(s string) float64 { return float64(len(s)) }

func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL + "/v1"
}

func newJudge(t *testing.T, cfg annotator.JudgeConfig) *annotator.OpenAIJudge {
	t.Helper()
	if cfg.Model == "" {
		cfg.Model = "test-judge"
	}
	if cfg.Retry.Backoff == 0 {
		cfg.Retry.Backoff = time.Millisecond
	}
	j, err := annotator.NewOpenAIJudge(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func score(t *testing.T, s annotator.BatchScorer, items ...annotator.Item) [][]float64 {
	t.Helper()
	got, err := s.ScoreBatch(context.Background(), items)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestJudgeBothOrders: the sentiment rule's verdicts hold in both orders; the winner scores 1.
func TestJudgeBothOrders(t *testing.T) {
	srv := &annotatortest.Judge{}
	j := newJudge(t, annotator.JudgeConfig{URL: serve(t, srv)})
	good, bad := " was great and the staff were friendly.", " was cold and the staff were rude."
	got := score(t, j, annotator.Item{Prompt: "The food", Responses: []string{good, bad}},
		annotator.Item{Prompt: "The food", Responses: []string{bad, good}})
	if want := [][]float64{{1, 0}, {0, 1}}; !reflect.DeepEqual(got, want) {
		t.Errorf("scores %v, want %v", got, want)
	}
	a := j.Accounting()
	if a.Pairs != 2 || a.Ties != 0 || a.PositionFlips != 0 || a.Requests != 4 || srv.Requests() != 4 {
		t.Errorf("accounting %+v, server requests %d; want 2 pairs, 4 requests", a, srv.Requests())
	}
	if a.PromptTokens < 4*20 || a.CompletionTokens != 4 {
		t.Errorf("tokens %d + %d, want the server's usage (20+ words a prompt, 1 an answer)", a.PromptTokens, a.CompletionTokens)
	}
	if srv.StructuredRequests() != 4 {
		t.Errorf("%d structured requests, want all 4 (auto)", srv.StructuredRequests())
	}
}

// TestJudgePositionFlip: a judge that always answers "A" decides nothing: a tie and a flip.
func TestJudgePositionFlip(t *testing.T) {
	j := newJudge(t, annotator.JudgeConfig{URL: serve(t, &annotatortest.Judge{FollowPosition: true})})
	got := score(t, j, annotator.Item{Prompt: "p", Responses: []string{"short", "much longer"}})
	if want := [][]float64{{0.5, 0.5}}; !reflect.DeepEqual(got, want) {
		t.Errorf("scores %v, want %v", got, want)
	}
	if a := j.Accounting(); a.Pairs != 1 || a.Ties != 1 || a.PositionFlips != 1 || a.Invalid != 0 {
		t.Errorf("accounting %+v, want one pair, a tie by a flip", a)
	}
}

// TestJudgeTiesAndManyResponses: every unordered pair is judged; a response scores its wins
// plus half its ties; identical responses tie without a request.
func TestJudgeTiesAndManyResponses(t *testing.T) {
	srv := &annotatortest.Judge{Score: byLength}
	j := newJudge(t, annotator.JudgeConfig{URL: serve(t, srv)})
	got := score(t, j,
		annotator.Item{Prompt: "p", Responses: []string{"aaa", "b", "cc", "cc"}},
		annotator.Item{Prompt: "p", Responses: []string{"xy", "zw"}}, // equal length: tie
		annotator.Item{Prompt: "p", Responses: []string{"alone"}},
		annotator.Item{Prompt: "p"},
	)
	want := [][]float64{{3, 0, 1.5, 1.5}, {0.5, 0.5}, {0}, {}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("scores %v, want %v", got, want)
	}
	// 6 + 1 pairs; the identical pair asks nothing: 6 pairs asked in both orders.
	if a := j.Accounting(); a.Pairs != 7 || a.Ties != 2 || a.PositionFlips != 0 || srv.Requests() != 12 {
		t.Errorf("accounting %+v, %d requests; want 7 pairs, 2 ties, 12 requests", a, srv.Requests())
	}
}

// TestJudgeInvalidAnswers: an unreadable answer is asked again; one that stays unreadable is
// invalid and the pair a tie, whatever order it came in.
func TestJudgeInvalidAnswers(t *testing.T) {
	item := annotator.Item{Prompt: "p", Responses: []string{"long one", "s"}}
	t.Run("retried", func(t *testing.T) {
		srv := &annotatortest.Judge{Score: byLength, Common: annotatortest.Common{Fault: annotatortest.FirstN(1, annotatortest.Fault{Answer: "Both have merits."})}}
		j := newJudge(t, annotator.JudgeConfig{URL: serve(t, srv), Limits: annotator.Limits{MaxConcurrency: 1}})
		if got := score(t, j, item); !reflect.DeepEqual(got, [][]float64{{1, 0}}) {
			t.Errorf("scores %v", got)
		}
		if a := j.Accounting(); a.Invalid != 0 || srv.Requests() != 3 {
			t.Errorf("accounting %+v, %d requests; want no invalid, 3 requests", a, srv.Requests())
		}
	})
	t.Run("always", func(t *testing.T) {
		srv := &annotatortest.Judge{Score: byLength, Common: annotatortest.Common{Fault: func(int64) annotatortest.Fault { return annotatortest.Fault{Answer: "A is better"} }}}
		j := newJudge(t, annotator.JudgeConfig{URL: serve(t, srv), MaxInvalidRetries: 1})
		if got := score(t, j, item); !reflect.DeepEqual(got, [][]float64{{0.5, 0.5}}) {
			t.Errorf("scores %v, want a tie (never the first response)", got)
		}
		if a := j.Accounting(); a.Invalid != 2 || a.Ties != 1 || a.PositionFlips != 0 || srv.Requests() != 4 {
			t.Errorf("accounting %+v, %d requests; want 2 invalid answers, 1 tie, 4 requests", a, srv.Requests())
		}
	})
	t.Run("malformed body retried", func(t *testing.T) {
		srv := &annotatortest.Judge{Score: byLength, Common: annotatortest.Common{Fault: annotatortest.FirstN(1, annotatortest.Fault{Malformed: true})}}
		j := newJudge(t, annotator.JudgeConfig{URL: serve(t, srv), Limits: annotator.Limits{MaxConcurrency: 1}})
		if got := score(t, j, item); !reflect.DeepEqual(got, [][]float64{{1, 0}}) {
			t.Errorf("scores %v", got)
		}
	})
	t.Run("malformed body fails", func(t *testing.T) {
		srv := &annotatortest.Judge{Common: annotatortest.Common{Fault: func(int64) annotatortest.Fault { return annotatortest.Fault{Malformed: true} }}}
		j := newJudge(t, annotator.JudgeConfig{URL: serve(t, srv)})
		_, err := j.ScoreBatch(context.Background(), []annotator.Item{item})
		if err == nil || !strings.Contains(err.Error(), "answer is not a chat completion") || !strings.Contains(err.Error(), "item 0, responses 0 and 1") {
			t.Errorf("err %v", err)
		}
	})
}

func TestJudgeStructuredOutput(t *testing.T) {
	item := annotator.Item{Prompt: "p", Responses: []string{"long one", "s"}}
	for _, c := range []struct {
		mode              string
		reject            bool
		wantErr           string
		requests, structd int64
	}{
		{"auto", false, "", 2, 2},
		{"auto", true, "", 3, 1}, // one 400, then text for the rest of the run
		{"json", false, "", 2, 2},
		{"json", true, `HTTP 400: {"error":{"code":400,"message":"response_format is not supported"`, 1, 1},
		{"text", true, "", 2, 0},
	} {
		srv := &annotatortest.Judge{Score: byLength, RejectResponseFormat: c.reject}
		j := newJudge(t, annotator.JudgeConfig{URL: serve(t, srv), Structured: c.mode, Limits: annotator.Limits{MaxConcurrency: 1}})
		got, err := j.ScoreBatch(context.Background(), []annotator.Item{item})
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("%s, reject %v: err %v, want %q", c.mode, c.reject, err, c.wantErr)
			}
		} else if err != nil || !reflect.DeepEqual(got, [][]float64{{1, 0}}) {
			t.Errorf("%s, reject %v: %v, %v", c.mode, c.reject, got, err)
		}
		if srv.Requests() != c.requests || srv.StructuredRequests() != c.structd {
			t.Errorf("%s, reject %v: %d requests (%d structured), want %d (%d)", c.mode, c.reject, srv.Requests(), srv.StructuredRequests(), c.requests, c.structd)
		}
	}
}

func TestJudge5xxRetried(t *testing.T) {
	srv := &annotatortest.Judge{Score: byLength, Common: annotatortest.Common{Fault: annotatortest.FirstN(2, annotatortest.Fault{Status: 502, Body: "bad gateway"})}}
	j := newJudge(t, annotator.JudgeConfig{URL: serve(t, srv)})
	if got := score(t, j, annotator.Item{Prompt: "p", Responses: []string{"aa", "b"}}); !reflect.DeepEqual(got, [][]float64{{1, 0}}) {
		t.Errorf("scores %v", got)
	}
	if a := j.Accounting(); a.Requests != 4 {
		t.Errorf("Requests %d, want 4 (2 failed, 2 answered)", a.Requests)
	}
}

func TestJudgeBudget(t *testing.T) {
	items := []annotator.Item{{Prompt: "p", Responses: []string{"aa", "b"}}, {Prompt: "q", Responses: []string{"aa", "b"}}}
	for _, c := range []struct {
		limits annotator.Limits
		want   string
	}{
		{annotator.Limits{MaxRequests: 3, MaxConcurrency: 1}, "3 requests sent, limit MaxRequests is 3; raise MaxRequests"},
		{annotator.Limits{MaxTokens: 10, MaxConcurrency: 1}, "limit MaxTokens is 10; raise MaxTokens"},
	} {
		srv := &annotatortest.Judge{Score: byLength}
		j := newJudge(t, annotator.JudgeConfig{URL: serve(t, srv), Limits: c.limits})
		_, err := j.ScoreBatch(context.Background(), items)
		if !errors.Is(err, annotator.ErrBudgetExceeded) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("err %v, want ErrBudgetExceeded with %q", err, c.want)
		}
		if c.limits.MaxRequests > 0 && srv.Requests() != c.limits.MaxRequests {
			t.Errorf("%d requests, want exactly the budget %d", srv.Requests(), c.limits.MaxRequests)
		}
		if c.limits.MaxTokens > 0 && srv.Requests() != 1 {
			t.Errorf("%d requests, want 1 (the first spends the budget)", srv.Requests())
		}
	}
}

func TestJudgeConcurrency(t *testing.T) {
	srv := &annotatortest.Judge{Score: byLength}
	srv.Delay = 20 * time.Millisecond
	j := newJudge(t, annotator.JudgeConfig{URL: serve(t, srv), Limits: annotator.Limits{MaxConcurrency: 3}})
	var items []annotator.Item
	for range 4 {
		items = append(items, annotator.Item{Prompt: "p", Responses: []string{"aa", "b"}})
	}
	score(t, j, items...)
	if srv.MaxInFlight() != 3 {
		t.Errorf("at most %d requests at once, want MaxConcurrency 3", srv.MaxInFlight())
	}
}

// TestJudgeTokenNeverInErrors: a server that echoes the Authorization header in its errors.
func TestJudgeTokenNeverInErrors(t *testing.T) {
	const token = "sk-judge-7d1e-secret"
	url := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "who is "+r.Header.Get("Authorization")+"?", http.StatusUnauthorized)
	}))
	j := newJudge(t, annotator.JudgeConfig{URL: url, Token: token})
	_, err := j.ScoreBatch(context.Background(), []annotator.Item{{Prompt: "p", Responses: []string{"a", "b"}}})
	if err == nil || strings.Contains(err.Error(), token) || !strings.Contains(err.Error(), "HTTP 401") {
		t.Errorf("err %v", err)
	}
	// The test judge's own token check.
	srv := &annotatortest.Judge{}
	srv.Token = "right"
	j = newJudge(t, annotator.JudgeConfig{URL: serve(t, srv), Token: token})
	_, err = j.ScoreBatch(context.Background(), []annotator.Item{{Prompt: "p", Responses: []string{"a", "b"}}})
	if err == nil || strings.Contains(err.Error(), token) || !strings.Contains(err.Error(), "HTTP 401") {
		t.Errorf("err %v", err)
	}
}

func TestJudgeCache(t *testing.T) {
	dir := t.TempDir()
	items := []annotator.Item{
		{Prompt: "p", Responses: []string{"aaa", "b", "cc"}},
		{Prompt: "q", Responses: []string{"xy", "zw"}},
	}
	srv := &annotatortest.Judge{Score: byLength}
	url := serve(t, srv)
	first := newJudge(t, annotator.JudgeConfig{URL: url, CacheDir: dir})
	want := score(t, first, items...)
	asked := srv.Requests()
	if asked != 8 || first.Accounting().CacheHits != 0 {
		t.Fatalf("%d requests, %d cache hits; want 8, 0", asked, first.Accounting().CacheHits)
	}

	// Another judge over the same folder, behind another URL: nothing asked again.
	other := &annotatortest.Judge{Score: byLength}
	second := newJudge(t, annotator.JudgeConfig{URL: serve(t, other), CacheDir: dir})
	if got := score(t, second, items...); !reflect.DeepEqual(got, want) {
		t.Errorf("cached scores %v, want %v", got, want)
	}
	if other.Requests() != 0 || second.Accounting().CacheHits != 8 || second.Accounting().Pairs != 4 {
		t.Errorf("%d requests, accounting %+v; want 0 requests and 8 cache hits", other.Requests(), second.Accounting())
	}

	// Another identity (template) asks again.
	third := newJudge(t, annotator.JudgeConfig{URL: url, CacheDir: dir, Template: annotator.DefaultJudgeTemplate + "\n"})
	score(t, third, items...)
	if srv.Requests() != 2*asked {
		t.Errorf("another template: %d requests in all, want %d", srv.Requests(), 2*asked)
	}
}

// TestJudgeCacheAfterCrash: a judge killed half way (its server dies) keeps what it was told;
// the next one, over the same folder, asks only for the rest, despite a leftover temporary file
// and a cache file cut short.
func TestJudgeCacheAfterCrash(t *testing.T) {
	dir := t.TempDir()
	var items []annotator.Item
	for i := range 5 {
		items = append(items, annotator.Item{Prompt: strings.Repeat("p", i+1), Responses: []string{"aaa", "b"}})
	}
	dying := &annotatortest.Judge{Score: byLength, Common: annotatortest.Common{Fault: func(n int64) annotatortest.Fault {
		if n > 6 {
			return annotatortest.Fault{Status: 500, Body: "node lost"}
		}
		return annotatortest.Fault{}
	}}}
	first := newJudge(t, annotator.JudgeConfig{URL: serve(t, dying), CacheDir: dir, Retry: annotator.Retry{Attempts: 1}, Limits: annotator.Limits{MaxConcurrency: 1}})
	if _, err := first.ScoreBatch(context.Background(), items); err == nil {
		t.Fatal("no error from a dead server")
	}
	// Debris of a writer killed mid-write, and a file cut short by a non-atomic writer.
	var files []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return err
	})
	if len(files) != 6 {
		t.Fatalf("%d cached verdicts, want the 6 answered", len(files))
	}
	if err := os.WriteFile(files[0]+".tmp123", []byte(`{"verd`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(files[1], []byte(`{"verd`), 0o644); err != nil {
		t.Fatal(err)
	}

	healthy := &annotatortest.Judge{Score: byLength}
	second := newJudge(t, annotator.JudgeConfig{URL: serve(t, healthy), CacheDir: dir})
	got := score(t, second, items...)
	for i, s := range got {
		if !reflect.DeepEqual(s, []float64{1, 0}) {
			t.Errorf("item %d: %v", i, s)
		}
	}
	// 10 verdicts: 6 told before the crash, less the one cut short.
	if healthy.Requests() != 5 || second.Accounting().CacheHits != 5 {
		t.Errorf("%d requests, %d cache hits after the crash; want 5 and 5", healthy.Requests(), second.Accounting().CacheHits)
	}
}

func TestJudgeConfigErrors(t *testing.T) {
	for _, c := range []struct {
		cfg  annotator.JudgeConfig
		want string
	}{
		{annotator.JudgeConfig{Model: "m"}, `judge URL ""`},
		{annotator.JudgeConfig{URL: "vllm:8000/v1", Model: "m"}, "want the base of an OpenAI-compatible API"},
		{annotator.JudgeConfig{URL: "http://j/v1"}, "judge Model is empty"},
		{annotator.JudgeConfig{URL: "http://j/v1", Model: "m", Template: "{{.Prompt"}, "judge Template"},
		{annotator.JudgeConfig{URL: "http://j/v1", Model: "m", Template: "{{.C}}"}, "it may use .Prompt, .A and .B"},
		{annotator.JudgeConfig{URL: "http://j/v1", Model: "m", Structured: "yaml"}, `judge Structured "yaml": use auto, json or text`},
		{annotator.JudgeConfig{URL: "http://j/v1", Model: "m", Temperature: 3}, "judge Temperature 3"},
		{annotator.JudgeConfig{URL: "http://j/v1", Model: "m", Limits: annotator.Limits{RequestsPerMinute: -5}}, "limits.RequestsPerMinute is -5"},
	} {
		if _, err := annotator.NewOpenAIJudge(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: err %v, want %q", c.cfg, err, c.want)
		}
	}
}

// TestDefaultTemplateRoundTrip: the test judge finds in the default template exactly the
// responses the judge put there, even ones that span lines.
func TestDefaultTemplateRoundTrip(t *testing.T) {
	var seen [][2]string
	srv := &annotatortest.Judge{Score: func(s string) float64 { return 0 }}
	srv.Extract = func(prompt string) (string, string, bool) {
		a, b, ok := annotatortest.ExtractTagged(prompt)
		seen = append(seen, [2]string{a, b})
		return a, b, ok
	}
	j := newJudge(t, annotator.JudgeConfig{URL: serve(t, srv), Limits: annotator.Limits{MaxConcurrency: 1}})
	x, y := "line one\nline two", " <A> odd "
	score(t, j, annotator.Item{Prompt: "opening", Responses: []string{x, y}})
	if want := [][2]string{{x, y}, {y, x}}; !reflect.DeepEqual(seen, want) {
		t.Errorf("the server read %q, want %q", seen, want)
	}
}
