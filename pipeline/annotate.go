package pipeline

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/trainer/annotator"
)

// A run has up to two annotators: spec.labeler.annotator (the gold one: it labels the pairs and
// scores the evaluations) and spec.evaluator.judge (an extra evaluator). Either may be a remote
// service (kind HTTP, OpenAIJudge or RewardModel), and then what every pod spends on it is kept
// in the workspace:
//
//	phase-<k>/annotation/<role>-<stage>-<index>.json   an AnnotationAccounting, rewritten after
//	                                                   every chunk of items, so a killed pod
//	                                                   loses the count of one chunk at most
//
// These files make three things work across pods, phases and retries: the run's budget
// (limits.maxRequests, limits.maxTokens), the per-phase accounting in the stage results and the
// report, and the judge's verdict cache (<workspace run folder>/annotation-cache/<role>/), which
// makes a retried stage ask nothing it already asked.

// Annotator roles: which spec an annotator comes from.
const (
	roleAnnotator = "annotator" // spec.labeler.annotator
	roleJudge     = "judge"     // spec.evaluator.judge
)

// scoreChunk is the number of items scored between two writes of a pod's accounting file.
const scoreChunk = 32

// accounted is a remote annotator whose spending is recorded in the workspace.
type accounted interface {
	annotator.BatchScorer
	Accounting() annotator.Accounting
}

// Scoring is an annotator opened for one pod's work: ScoreBatch scores, Spent says what this
// pod's use of a remote annotator has cost so far (nil for a built-in one).
type Scoring struct {
	annotator.BatchScorer
	remote accounted
	path   string                        // the pod's accounting file
	prev   v1alpha1.AnnotationAccounting // spent by earlier attempts of this pod's work
}

// ScoreBatch scores items; for a remote annotator it does so in chunks and records the spending
// after each.
func (s *Scoring) ScoreBatch(ctx context.Context, items []annotator.Item) ([][]float64, error) {
	if s.remote == nil {
		return s.BatchScorer.ScoreBatch(ctx, items)
	}
	out := make([][]float64, 0, len(items))
	for lo := 0; lo < len(items); lo += scoreChunk {
		scores, err := s.remote.ScoreBatch(ctx, items[lo:min(lo+scoreChunk, len(items))])
		if werr := s.record(); werr != nil && err == nil {
			err = werr
		}
		if err != nil {
			return nil, err
		}
		out = append(out, scores...)
	}
	return out, nil
}

// Spent is what this pod's work has cost on a remote annotator, earlier attempts included (nil
// for a built-in annotator).
func (s *Scoring) Spent() *v1alpha1.AnnotationAccounting {
	if s.remote == nil {
		return nil
	}
	a := s.prev
	a.Add(toAPIAccounting(s.remote.Accounting()))
	return &a
}

func (s *Scoring) record() error {
	if err := os.MkdirAll(filepath.Dir(s.path), 0o755); err != nil {
		return err
	}
	return writeJSONAtomic(s.path, s.Spent())
}

func toAPIAccounting(a annotator.Accounting) v1alpha1.AnnotationAccounting {
	return v1alpha1.AnnotationAccounting{Pairs: a.Pairs, Ties: a.Ties, Invalid: a.Invalid, PositionFlips: a.PositionFlips,
		Requests: a.Requests, PromptTokens: a.PromptTokens, CompletionTokens: a.CompletionTokens, CacheHits: a.CacheHits, Texts: a.Texts}
}

// AnnotationDir holds phase k's accounting files.
func (w *Workspace) AnnotationDir(k int) string { return filepath.Join(w.PhaseDir(k), "annotation") }

// annotationPath is the accounting file of one pod's use of an annotator.
func (w *Workspace) annotationPath(k int, role, stage string, index int) string {
	return filepath.Join(w.AnnotationDir(k), fmt.Sprintf("%s-%s-%d.json", role, stage, index))
}

// AnnotationCacheDir is where a judge of the given role keeps its verdicts, for the whole run.
func (w *Workspace) AnnotationCacheDir(role string) string {
	return filepath.Join(w.Root, "annotation-cache", role)
}

// Annotator opens the run's gold annotator (spec.labeler.annotator) for the work of stage
// `stage`, shard or pod `index`, of phase k.
func (e *Env) Annotator(k int, stage string, index int) (*Scoring, error) {
	if e.Scorer != nil {
		return &Scoring{BatchScorer: annotator.Batch(e.Scorer)}, nil
	}
	return e.openAnnotator(k, stage, index, roleAnnotator, "spec.labeler.annotator", *e.Run.Spec.Labeler.Annotator, v1alpha1.EnvAnnotatorToken)
}

// EvalJudge opens spec.evaluator.judge for phase k's eval stage, or returns nil when the run
// has none.
func (e *Env) EvalJudge(k int) (*Scoring, error) {
	j := e.Run.Spec.Evaluator.Judge
	if j == nil {
		return nil, nil
	}
	return e.openAnnotator(k, v1alpha1.StageEval, 0, roleJudge, "spec.evaluator.judge", *j, v1alpha1.EnvEvaluatorToken)
}

func (e *Env) openAnnotator(k int, stage string, index int, role, where string, a v1alpha1.AnnotatorSpec, tokenEnv string) (*Scoring, error) {
	if a.Kind == v1alpha1.AnnotatorBuiltin || a.Kind == "" {
		s, err := annotator.Builtin(a.Name)
		if err != nil {
			return nil, fmt.Errorf("%s.name: %w", where, err)
		}
		return &Scoring{BatchScorer: annotator.Batch(s)}, nil
	}
	if !a.Kind.IsRemote() {
		return nil, fmt.Errorf("%s.kind %q is not known: use Builtin, HTTP, OpenAIJudge or RewardModel", where, a.Kind)
	}
	if !strings.HasPrefix(a.URL, "http://") && !strings.HasPrefix(a.URL, "https://") {
		return nil, fmt.Errorf("%s.url: kind %s needs the service's http:// or https:// url", where, a.Kind)
	}
	token := os.Getenv(tokenEnv)
	if token != "" && strings.HasPrefix(a.URL, "http://") && !a.AllowInsecureHTTP {
		return nil, fmt.Errorf("%s.url %s: the token of $%s is only sent over https://; use an https url, or set %s.allowInsecureHTTP: true for an in-cluster service without TLS", where, a.URL, tokenEnv, where)
	}
	s := &Scoring{path: e.WS.annotationPath(k, role, stage, index)}
	if err := readJSON(s.path, &s.prev); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%v: delete it to count this pod's spending from zero", err)
	}
	limits, err := e.annotatorLimits(k, stage, role, where, a.Limits, s.path, s.prev)
	if err != nil {
		return nil, err
	}
	switch a.Kind {
	case v1alpha1.AnnotatorHTTP:
		s.remote = &annotator.HTTP{URL: a.URL, Token: token, Limits: limits}
	case v1alpha1.AnnotatorOpenAIJudge:
		structured := map[v1alpha1.JudgeOutput]string{"": annotator.StructuredAuto, v1alpha1.JudgeOutputAuto: annotator.StructuredAuto,
			v1alpha1.JudgeOutputJSON: annotator.StructuredJSON, v1alpha1.JudgeOutputText: annotator.StructuredText}[a.Output]
		j, err := annotator.NewOpenAIJudge(annotator.JudgeConfig{URL: a.URL, Model: a.Model, Token: token, Template: a.PromptTemplate,
			Structured: structured, Limits: limits, CacheDir: e.WS.AnnotationCacheDir(role)})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		s.remote = j
	case v1alpha1.AnnotatorRewardModel:
		protocol := map[v1alpha1.RewardProtocol]string{v1alpha1.RewardOpenRLHF: annotator.ProtocolOpenRLHF, v1alpha1.RewardVLLMPooling: annotator.ProtocolVLLMPooling}[a.Protocol]
		m, err := annotator.NewRewardModel(annotator.RewardModelConfig{Protocol: protocol, URL: a.URL, Model: a.Model, Token: token, Limits: limits})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		s.remote = m
	}
	s.BatchScorer = s.remote
	return s, nil
}

// annotatorLimits turns the spec's limits into this pod's: the rates and concurrency as they
// are, and the run's budget minus what every other pod of the run has recorded, minus what
// earlier attempts of this pod's work spent (prev), shared equally among the label shards of
// phase k still unfinished. Shards that start later see the spending recorded since, so the
// pods of a run together stay within the budget.
func (e *Env) annotatorLimits(k int, stage, role, where string, l *v1alpha1.AnnotatorLimits, own string, prev v1alpha1.AnnotationAccounting) (annotator.Limits, error) {
	if l == nil {
		return annotator.Limits{}, nil
	}
	out := annotator.Limits{MaxConcurrency: int(l.MaxConcurrency), RequestsPerMinute: int(l.RequestsPerMinute), TokensPerMinute: int(l.TokensPerMinute)}
	if l.MaxRequests == 0 && l.MaxTokens == 0 {
		return out, nil
	}
	others, err := e.spentByOthers(role, own)
	if err != nil {
		return out, err
	}
	shares := int64(1)
	if stage == v1alpha1.StageLabel {
		shares = int64(max(e.unfinishedShards(k, stage), 1))
	}
	share := func(field string, budget, spentOthers, spentOwn int64) (int64, error) {
		left := budget - spentOthers - spentOwn
		if left <= 0 || left/shares == 0 {
			return 0, fmt.Errorf("%s.limits.%s: %w: the run has spent %d of its %d; raise %s.limits.%s to go on", where, field,
				annotator.ErrBudgetExceeded, spentOthers+spentOwn, budget, where, field)
		}
		return left / shares, nil
	}
	if l.MaxRequests > 0 {
		if out.MaxRequests, err = share("maxRequests", l.MaxRequests, others.Requests, prev.Requests); err != nil {
			return out, err
		}
	}
	if l.MaxTokens > 0 {
		if out.MaxTokens, err = share("maxTokens", l.MaxTokens, others.PromptTokens+others.CompletionTokens, prev.PromptTokens+prev.CompletionTokens); err != nil {
			return out, err
		}
	}
	return out, nil
}

// spentByOthers adds up the accounting files of role in every phase, except own.
func (e *Env) spentByOthers(role, own string) (v1alpha1.AnnotationAccounting, error) {
	var sum v1alpha1.AnnotationAccounting
	for k := 0; k <= e.Run.Phases(); k++ { // phase 0: the local runner's evaluation of the initial model
		files, err := filepath.Glob(filepath.Join(e.WS.AnnotationDir(k), role+"-*.json"))
		if err != nil {
			return sum, err
		}
		for _, f := range files {
			if f == own {
				continue
			}
			var a v1alpha1.AnnotationAccounting
			if err := readJSON(f, &a); err != nil {
				return sum, fmt.Errorf("%v: the run's annotator budget cannot be checked; delete the file to count it as nothing", err)
			}
			sum.Add(a)
		}
	}
	return sum, nil
}

// unfinishedShards counts the shards of a stage of phase k without a done marker, by the shard
// count the phase recorded (this pod's included).
func (e *Env) unfinishedShards(k int, stage string) int {
	n, err := e.recordedShards(k, stage)
	if err != nil || n <= 0 {
		return 1
	}
	left := 0
	for j := range n {
		if _, done := e.Done(k, stage, j); !done {
			left++
		}
	}
	return left
}
