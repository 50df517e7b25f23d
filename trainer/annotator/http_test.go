package annotator

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// lengthService scores a response by its length and records what it was sent.
func lengthService(t *testing.T, fail func(call int32) (int, string)) (*httptest.Server, *atomic.Int32, *[]string) {
	t.Helper()
	var calls atomic.Int32
	var auth []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		auth = append(auth, r.Header.Get("Authorization"))
		if fail != nil {
			if code, body := fail(n); code != 0 {
				http.Error(w, body, code)
				return
			}
		}
		var req httpRequest
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" || json.NewDecoder(r.Body).Decode(&req) != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		resp := httpResponse{Scores: make([][]float64, len(req.Items))}
		for i, it := range req.Items {
			for _, s := range it.Responses {
				resp.Scores[i] = append(resp.Scores[i], float64(len(s)))
			}
		}
		_ = json.NewEncoder(w).Encode(resp)
	}))
	t.Cleanup(srv.Close)
	return srv, &calls, &auth
}

func TestHTTPScoresInBatches(t *testing.T) {
	srv, calls, auth := lengthService(t, nil)
	h := &HTTP{URL: srv.URL, Token: "s3cret", BatchSize: 2}
	items := []Item{{"p", []string{"a", "bbb"}}, {"p", []string{"cc"}}, {"p", []string{"", "dddd"}}, {"q", []string{"e", "ff"}}, {"q", []string{"ggggg"}}}
	got, err := h.ScoreBatch(context.Background(), items)
	if err != nil {
		t.Fatal(err)
	}
	want := [][]float64{{1, 3}, {2}, {0, 4}, {1, 2}, {5}}
	for i := range want {
		if len(got[i]) != len(want[i]) {
			t.Fatalf("scores %v, want %v", got, want)
		}
		for j := range want[i] {
			if got[i][j] != want[i][j] {
				t.Fatalf("scores %v, want %v", got, want)
			}
		}
	}
	if calls.Load() != 3 {
		t.Errorf("%d requests for 5 items in batches of 2, want 3", calls.Load())
	}
	for _, a := range *auth {
		if a != "Bearer s3cret" {
			t.Errorf("Authorization %q", a)
		}
	}
}

func TestHTTPRetriesAndErrors(t *testing.T) {
	items := []Item{{"p", []string{"a", "bb"}}}
	cases := []struct {
		name      string
		fail      func(int32) (int, string)
		wantErr   string // "" = success
		wantCalls int32
	}{
		{"503 then ok", func(n int32) (int, string) {
			if n == 1 {
				return 503, "warming up"
			}
			return 0, ""
		}, "", 2},
		{"429 every time", func(int32) (int, string) { return 429, "slow down" }, "3 attempts failed, the last: HTTP 429: slow down", 3},
		{"400 is not retried", func(int32) (int, string) { return 400, "unknown field responses" }, "HTTP 400: unknown field responses", 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv, calls, _ := lengthService(t, c.fail)
			h := &HTTP{URL: srv.URL, Attempts: 3, Backoff: time.Millisecond}
			_, err := h.ScoreBatch(context.Background(), items)
			if (c.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.wantErr)) {
				t.Errorf("err %v, want %q", err, c.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), srv.URL) {
				t.Errorf("error %v does not name the service", err)
			}
			if calls.Load() != c.wantCalls {
				t.Errorf("%d requests, want %d", calls.Load(), c.wantCalls)
			}
		})
	}
}

func TestHTTPRejectsMalformedAnswers(t *testing.T) {
	for name, c := range map[string]struct{ body, want string }{
		"not json":      {"<html>oops</html>", `answer is not {"scores"`},
		"too few lists": {`{"scores": []}`, "0 score lists for 1 items"},
		"ragged":        {`{"scores": [[1]]}`, "item 0: 1 scores for 2 responses"},
	} {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(c.body)) }))
			defer srv.Close()
			_, err := (&HTTP{URL: srv.URL, Backoff: time.Millisecond}).ScoreBatch(context.Background(), []Item{{"p", []string{"a", "b"}}})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err %v, want %q", err, c.want)
			}
		})
	}
}

func TestBatchAdapterMatchesScore(t *testing.T) {
	s := NewSentiment()
	items := []Item{{"The food", []string{" was great", " was awful and cold"}}, {"It", []string{""}}}
	got, err := Batch(s).ScoreBatch(context.Background(), items)
	if err != nil {
		t.Fatal(err)
	}
	for i, it := range items {
		for j, r := range it.Responses {
			if got[i][j] != s.Score(it.Prompt, r) {
				t.Errorf("item %d response %d: %v != %v", i, j, got[i][j], s.Score(it.Prompt, r))
			}
		}
	}
}

func TestValidUTF8MatchesJSON(t *testing.T) {
	for _, s := range []string{"plain", "caf\xc3\xa9", "bad\xff\xfebytes", "\xe2\x82", ""} {
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		var back string
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if got := ValidUTF8(s); got != back {
			t.Errorf("ValidUTF8(%q) = %q, JSON round trip %q", s, got, back)
		}
	}
}
