package pipeline

import (
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/trainer/annotator"
	"github.com/bpo-dev/bpo/trainer/annotator/annotatortest"
)

func lettersRule(text string) float64 { return letterScorer{}.Score("", text) }

// TestJudgeRun: a whole local run labelled by an OpenAI-compatible judge (a rule-based test
// server behind a token) and evaluated by a second judge. The judge's rule is the in-process
// scorer's, so the pairs must be exactly the in-process run's; the accounting adds up (two
// requests per judged pair, no flips); a relabelled phase reads every verdict back from the
// workspace's cache and asks nothing.
func TestJudgeRun(t *testing.T) {
	gold := &annotatortest.Judge{Common: annotatortest.Common{Token: "tok-judge"}, Score: lettersRule}
	goldSrv := httptest.NewServer(gold)
	defer goldSrv.Close()
	evalJudge := &annotatortest.Judge{Common: annotatortest.Common{Token: "tok-eval"}}
	evalSrv := httptest.NewServer(evalJudge)
	defer evalSrv.Close()
	t.Setenv(v1alpha1.EnvAnnotatorToken, "tok-judge")
	t.Setenv(v1alpha1.EnvEvaluatorToken, "tok-eval")

	b := makeRun("judged")
	b.ar.Spec.Labeler.Annotator = &v1alpha1.AnnotatorSpec{Kind: v1alpha1.AnnotatorOpenAIJudge, URL: goldSrv.URL + "/v1", Model: "rule", AllowInsecureHTTP: true}
	b.ar.Spec.Evaluator.Judge = &v1alpha1.AnnotatorSpec{Kind: v1alpha1.AnnotatorOpenAIJudge, URL: evalSrv.URL + "/v1", Model: "rule", AllowInsecureHTTP: true,
		Output: v1alpha1.JudgeOutputText}
	e := b.Env(t, newVolume(t))
	e.Scorer = nil

	ref := makeRun("judged").Env(t, newVolume(t))
	ref.Scorer = utf8Letters{}
	refSums, err := ref.RunAll(RunHooks{})
	if err != nil {
		t.Fatal(err)
	}
	sums, err := e.RunAll(RunHooks{})
	if err != nil {
		t.Fatal(err)
	}
	for k, s := range sums {
		if s.Pairs != refSums[k].Pairs || s.Ties != refSums[k].Ties {
			t.Errorf("phase %d: pairs %d ties %d by the judge, %d %d in process", k+1, s.Pairs, s.Ties, refSums[k].Pairs, refSums[k].Ties)
		}
		a := s.Annotation
		if a == nil {
			t.Fatalf("phase %d: no accounting", k+1)
		}
		if a.Pairs != s.Pairs+s.Ties || a.Ties != s.Ties || a.PositionFlips != 0 || a.Invalid != 0 || a.Requests != 2*a.Pairs || a.PromptTokens == 0 {
			t.Errorf("phase %d accounting %+v for %d pairs and %d ties", k+1, *a, s.Pairs, s.Ties)
		}
		if s.Evaluated != (s.JudgeWinRate != nil) {
			t.Errorf("phase %d: evaluated %v, judge win rate %v", k+1, s.Evaluated, s.JudgeWinRate)
		}
	}
	if evalJudge.Requests() == 0 || evalJudge.StructuredRequests() != 0 {
		t.Errorf("evaluator judge: %d requests, %d structured (output Text asks for none)", evalJudge.Requests(), evalJudge.StructuredRequests())
	}
	ev, err := e.LoadEval(2)
	if err != nil {
		t.Fatal(err)
	}
	wins := 0.0
	for _, o := range ev.PerPrompt {
		if o.JudgeWin == nil {
			t.Fatal("a prompt without the judge's outcome")
		}
		wins += *o.JudgeWin
	}
	if ev.JudgeWinRate == nil || ev.JudgeTieRate == nil || *ev.JudgeWinRate+*ev.JudgeTieRate/2 != wins/float64(len(ev.PerPrompt)) {
		t.Errorf("judge win rate %v tie rate %v, per-prompt mean %v", ev.JudgeWinRate, ev.JudgeTieRate, wins/float64(len(ev.PerPrompt)))
	}
	if _, err := e.WriteReport(sums); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(e.WS.Root, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(md), "## Annotation") || !strings.Contains(string(md), "judge win rate") {
		t.Error("report.md has no annotation section")
	}

	// Relabel phase 2 as a retried stage would: the verdicts come from the cache.
	before := gold.Requests()
	for _, p := range []string{e.WS.DonePath(2, v1alpha1.StageLabel, 0), e.WS.PairsPath(2, 0)} {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	r, err := e.Label(2, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := gold.Requests() - before; got != 0 || r.Pairs != sums[1].Pairs {
		t.Errorf("relabel: %d new requests, %d pairs (want 0 and %d)", got, r.Pairs, sums[1].Pairs)
	}
	if r.Annotation == nil || r.Annotation.CacheHits != 2*(r.Pairs+r.Ties) {
		t.Errorf("relabel accounting %+v, want %d cache hits", r.Annotation, 2*(r.Pairs+r.Ties))
	}
}

// TestAnnotatorBudget: limits.maxRequests bounds the whole run. A label shard stops when its
// share is spent, with an error naming the field; the spending survives in the workspace, so
// the retry fails at once without a request, and raising the budget lets it finish.
func TestAnnotatorBudget(t *testing.T) {
	gold := &annotatortest.Judge{Score: lettersRule}
	srv := httptest.NewServer(gold)
	defer srv.Close()
	b := makeRun("budget")
	spec := &v1alpha1.AnnotatorSpec{Kind: v1alpha1.AnnotatorOpenAIJudge, URL: srv.URL + "/v1", Model: "rule",
		Limits: &v1alpha1.AnnotatorLimits{MaxRequests: 6, MaxConcurrency: 1}}
	b.ar.Spec.Labeler.Annotator = spec
	vol := newVolume(t)
	e := b.Env(t, vol)
	e.Scorer = nil
	if _, err := e.Sample(1, 0, 1); err != nil {
		t.Fatal(err)
	}
	_, err := e.Label(1, 0, 1)
	if !errors.Is(err, annotator.ErrBudgetExceeded) || !strings.Contains(err.Error(), "spec.labeler.annotator") {
		t.Fatalf("label over budget: %v", err)
	}
	if got := gold.Requests(); got != 6 {
		t.Fatalf("%d requests sent with a budget of 6", got)
	}
	_, err = e.Label(1, 0, 1)
	if !errors.Is(err, annotator.ErrBudgetExceeded) || !strings.Contains(err.Error(), "spec.labeler.annotator.limits.maxRequests") {
		t.Fatalf("retry over budget: %v", err)
	}
	if got := gold.Requests(); got != 6 {
		t.Fatalf("the retry sent %d more requests", got-6)
	}
	spec.Limits.MaxRequests = 1000
	e = b.Env(t, vol)
	e.Scorer = nil
	if _, err := e.Label(1, 0, 1); err != nil {
		t.Fatalf("label with a raised budget: %v", err)
	}
}

// TestRewardModelRun: labels from a reward model over OpenRLHF's and vLLM's protocols are the
// in-process scorer's on the same text (prompt + response).
func TestRewardModelRun(t *testing.T) {
	for _, tc := range []struct {
		protocol v1alpha1.RewardProtocol
		path     string
	}{{v1alpha1.RewardOpenRLHF, "/get_reward"}, {v1alpha1.RewardVLLMPooling, "/pooling"}} {
		t.Run(string(tc.protocol), func(t *testing.T) {
			var srv *httptest.Server
			switch tc.protocol {
			case v1alpha1.RewardOpenRLHF:
				srv = httptest.NewServer(&annotatortest.OpenRLHF{Score: lettersRule})
			default:
				srv = httptest.NewServer(&annotatortest.VLLMPooling{Score: lettersRule})
			}
			defer srv.Close()
			b := makeRun("rm")
			b.ar.Spec.TrustRegion.Phases = 1
			b.ar.Spec.Labeler.Annotator = &v1alpha1.AnnotatorSpec{Kind: v1alpha1.AnnotatorRewardModel, URL: srv.URL + tc.path, Protocol: tc.protocol}
			if tc.protocol == v1alpha1.RewardVLLMPooling {
				b.ar.Spec.Labeler.Annotator.Model = "rm"
			}
			e := b.Env(t, newVolume(t))
			e.Scorer = nil
			ref := b.Env(t, newVolume(t))
			ref.Scorer = promptPlusLetters{}
			for _, env := range []*Env{e, ref} {
				if _, err := env.Sample(1, 0, 1); err != nil {
					t.Fatal(err)
				}
			}
			got, err := e.Label(1, 0, 1)
			if err != nil {
				t.Fatal(err)
			}
			want, err := ref.Label(1, 0, 1)
			if err != nil {
				t.Fatal(err)
			}
			if got.Pairs != want.Pairs || got.Ties != want.Ties || got.Annotation == nil || got.Annotation.Texts == 0 {
				t.Errorf("reward model: pairs %d ties %d accounting %+v; in process %d %d", got.Pairs, got.Ties, got.Annotation, want.Pairs, want.Ties)
			}
		})
	}
}

// promptPlusLetters scores prompt + response as a reward model receives them.
type promptPlusLetters struct{}

func (promptPlusLetters) Name() string { return "prompt+letters" }
func (promptPlusLetters) Score(p, r string) float64 {
	return lettersRule(annotator.ValidUTF8(p + r))
}
