package pipeline

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/stage/contract"
)

// The reporter posts the newest update with the pod's token, at most once per interval (plus the
// final one), reading the token file on every post; a failing endpoint never blocks the stage
// and its error is logged without the token.
func TestProgressReporter(t *testing.T) {
	var mu sync.Mutex
	var got []v1alpha1.ProgressReport
	var auths []string
	fail := false
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.URL.Path != contract.ProgressPath || r.Method != http.MethodPost {
			http.Error(w, "wrong endpoint", http.StatusNotFound)
			return
		}
		if fail {
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
			return
		}
		var rep v1alpha1.ProgressReport
		if err := json.NewDecoder(r.Body).Decode(&rep); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		got, auths = append(got, rep), append(auths, r.Header.Get("Authorization"))
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("tok-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(contract.EnvProgressURL, srv.URL+"/")
	t.Setenv(contract.EnvProgressTokenFile, tokenFile)
	var log lockedBuffer
	r := ProgressFromEnv(&log)
	if r == nil || r.URL != srv.URL+contract.ProgressPath {
		t.Fatalf("reporter from env: %+v", r)
	}
	r.Interval = 200 * time.Millisecond
	wait := func(n int) []v1alpha1.ProgressReport {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			mu.Lock()
			g := append([]v1alpha1.ProgressReport(nil), got...)
			mu.Unlock()
			if len(g) >= n || time.Now().After(deadline) {
				return g
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	// 100 steps in a burst: the first is queued, the rest wait for the interval, except the last
	// (which replaces the first if that is not sent yet: only the newest matters).
	for i := 1; i <= 100; i++ {
		r.Update(ProgressUpdate{Stage: "train/0", Done: i, Total: 100, Metrics: map[string]float64{"loss": 1 / float64(i)}})
	}
	deadline := time.Now().Add(5 * time.Second)
	g := wait(1)
	for (len(g) == 0 || g[len(g)-1].Done != 100) && time.Now().Before(deadline) {
		g = wait(len(g) + 1)
	}
	last := g[len(g)-1]
	if len(g) > 2 || (len(g) == 2 && g[0].Done != 1) || last.Done != 100 || last.Total != 100 || last.Metrics["loss"] != 0.01 || last.ElapsedSeconds <= 0 {
		t.Fatalf("posted %+v, want (step 1 and) the final step 100", g)
	}
	n := len(g)
	if err := os.WriteFile(tokenFile, []byte("tok-2"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(r.Interval)
	r.Update(ProgressUpdate{Stage: "eval", Done: 3, Total: 10})
	g = wait(n + 1)
	mu.Lock()
	if len(g) != n+1 || g[n].Stage != "eval" || auths[0] != "Bearer tok-1" || auths[n] != "Bearer tok-2" {
		t.Errorf("posts %+v with %v: want the renewed token read again", g, auths)
	}
	fail = true
	mu.Unlock()

	// A failing endpoint: Update returns at once, the failure is logged once, without the token.
	time.Sleep(r.Interval)
	start := time.Now()
	for i := range 5 {
		r.Update(ProgressUpdate{Stage: "eval", Done: 4 + i, Total: 10})
		time.Sleep(r.Interval / 2)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("updates against a failing endpoint took %v", d)
	}
	deadline = time.Now().Add(5 * time.Second)
	for !strings.Contains(log.String(), "503") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	text := log.String()
	if strings.Count(text, "progress report") != 1 || !strings.Contains(text, "down for maintenance") || strings.Contains(text, "tok-2") {
		t.Errorf("log %q: want one line naming the failure, without the token", text)
	}

	t.Setenv(contract.EnvProgressURL, "")
	if ProgressFromEnv(nil) != nil {
		t.Error("no endpoint in the environment: no reporter")
	}
}

// lockedBuffer is a log the reporter's goroutine writes while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
