package pipeline

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"unicode/utf8"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/trainer/annotator"
	"github.com/bpo-dev/bpo/trainer/model"
	"github.com/bpo-dev/bpo/trainer/sample"
	"github.com/bpo-dev/bpo/trainer/tokenizer"
)

// SampleRow is one prompt of a sample shard with its responses from the behavior model.
// Response token ids end with the end-of-text token when the model stopped on its own,
// so that training also learns when to stop; the texts never contain it.
type SampleRow struct {
	Index          int       `json:"index"`
	Prompt         string    `json:"prompt"`
	PromptIDs      []int     `json:"prompt_ids"`
	Responses      []string  `json:"responses"`
	ResponseIDs    [][]int   `json:"response_ids"`
	BehaviorLogps  []float64 `json:"behavior_logps"`
	ReferenceLogps []float64 `json:"reference_logps"`
	Identical      bool      `json:"identical,omitempty"`
}

// Pair is a labelled preference pair. prompt/chosen/rejected is the shape DPO tools
// (TRL, OpenRLHF) read; the other fields are ours.
type Pair struct {
	Prompt         string     `json:"prompt"`
	Chosen         string     `json:"chosen"`
	Rejected       string     `json:"rejected"`
	ScoreChosen    float64    `json:"score_chosen"`
	ScoreRejected  float64    `json:"score_rejected"`
	Phase          int        `json:"phase"`
	Index          int        `json:"index"`
	PromptIDs      []int      `json:"prompt_ids"`
	ChosenIDs      []int      `json:"chosen_ids"`
	RejectedIDs    []int      `json:"rejected_ids"`
	BehaviorLogps  [2]float64 `json:"behavior_logps"`  // chosen, rejected
	ReferenceLogps [2]float64 `json:"reference_logps"` // chosen, rejected
}

// quoteStart is the start of s for an error message: at most n bytes (on a rune boundary) and
// "…", so a huge input never pushes the cause out of a bounded message.
func quoteStart(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// encodePrompt tokenises a prompt and checks that it leaves room for the response.
func encodePrompt(tok tokenizer.Tokenizer, cfg model.Config, prompt string, maxNew int) ([]int, error) {
	ids := tok.Encode(prompt)
	if len(ids) == 0 {
		return nil, fmt.Errorf("empty prompt")
	}
	if len(ids)+maxNew > cfg.NPositions {
		return nil, fmt.Errorf("prompt %q is %d tokens; with spec.sampler.maxNewTokens %d it exceeds the model's context of %d",
			quoteStart(prompt, 80), len(ids), maxNew, cfg.NPositions)
	}
	return ids, nil
}

// generate samples n responses per prompt in chunks (for progress), with random streams
// keyed by the global row index so that any sharding draws the same samples.
func (e *Env) generate(stage string, m sample.Model, prompts [][]int, n int, opt sample.Options, firstRow int) ([][]int, []bool, error) {
	rows := make([][]int, 0, len(prompts)*n)
	for _, p := range prompts {
		for range n {
			rows = append(rows, p)
		}
	}
	out := make([][]int, len(rows))
	ended := make([]bool, len(rows))
	const chunk = 64
	for lo := 0; lo < len(rows); lo += chunk {
		hi := min(lo+chunk, len(rows))
		o := opt
		o.RowOffset = firstRow*n + lo
		gen, err := sample.Generate(m, rows[lo:hi], o)
		if err != nil {
			return nil, nil, err
		}
		for i, g := range gen {
			r := lo + i
			// A row that stopped before its budget and before the context's end drew EOT.
			if len(g) < opt.MaxNewTokens && len(rows[r])+len(g) < m.ContextLen() {
				ended[r] = true
				g = append(g, opt.EOT)
			}
			out[r] = g
		}
		e.progress(stage, hi, len(rows))
	}
	return out, ended, nil
}

func (e *Env) samplerOptions(tok tokenizer.Tokenizer, seed uint64) sample.Options {
	s := e.Run.Spec.Sampler
	return sample.Options{
		Temperature:  e.Run.Temperature,
		TopK:         int(deref(s.TopK, 0)),
		TopP:         e.Run.TopP,
		MaxNewTokens: int(s.MaxNewTokens),
		EOT:          tok.EOT(),
		Seed:         seed,
	}
}

func decode(tok tokenizer.Tokenizer, ids []int) string {
	if n := len(ids); n > 0 && ids[n-1] == tok.EOT() {
		ids = ids[:n-1]
	}
	return tok.Decode(ids)
}

// Sample is the sample stage of phase k, shard `shard` of `shards`: it merges the
// ensemble into the behavior model (saving the snapshot), draws samplesPerPrompt
// responses per prompt, and records their behavior and reference log-probs, computed
// once here so training needs no second model.
//
// shard and shards are the pod's index and count; the rows are split by the count the phase's
// sampling started with (shardplan.go), so a changed parallelism never drops or repeats a prompt.
func (e *Env) Sample(k, shard, shards int) (v1alpha1.StageResult, error) {
	return e.runShards(k, v1alpha1.StageSample, shard, shards, func(j, n int) (v1alpha1.StageResult, error) {
		return e.sampleShard(k, j, n)
	})
}

// sampleShard samples shard `shard` of `shards` (the recorded count) of phase k.
func (e *Env) sampleShard(k, shard, shards int) (v1alpha1.StageResult, error) {
	return e.once(k, v1alpha1.StageSample, shard, func(r *v1alpha1.StageResult) error {
		b, err := e.LoadBase()
		if err != nil {
			return err
		}
		behavior, err := e.Policy(k - 1)
		if err != nil {
			return err
		}
		if err := saveOnce(e.WS.BehaviorDir(k), behavior); err != nil {
			return err
		}
		if err := e.saveBehaviorAdapter(k); err != nil {
			return err
		}
		ref, same, err := e.Reference(k, behavior)
		if err != nil {
			return err
		}
		if !same {
			if err := saveOnce(e.WS.ReferenceDir(k), ref); err != nil {
				return err
			}
		}
		prompts, err := e.PhasePrompts(k)
		if err != nil {
			return err
		}
		lo, hi := ShardRange(len(prompts), shard, shards)
		maxNew := int(e.Run.Spec.Sampler.MaxNewTokens)
		ids := make([][]int, 0, hi-lo)
		for _, p := range prompts[lo:hi] {
			pid, err := encodePrompt(b.Tok, b.Weights.Config, p, maxNew)
			if err != nil {
				return fmt.Errorf("spec.data: %w", err)
			}
			ids = append(ids, pid)
		}
		n := int(e.Run.Spec.Budget.SamplesPerPrompt)
		inf := model.NewInference(behavior)
		resp, blp, err := e.drawSamples(k, inf, b.Tok, ids, n, lo)
		if err != nil {
			return err
		}
		rowPrompts := make([][]int, len(resp))
		for i := range resp {
			rowPrompts[i] = ids[i/n]
		}
		rlp := blp
		if !same {
			if rlp, _, err = model.NewInference(ref).SequenceLogProbs(rowPrompts, resp); err != nil {
				return err
			}
		}
		rows := make([]SampleRow, len(ids))
		for i := range rows {
			row := SampleRow{Index: lo + i, Prompt: prompts[lo+i], PromptIDs: ids[i], Identical: true}
			for j := range n {
				q := i*n + j
				row.Responses = append(row.Responses, decode(b.Tok, resp[q]))
				row.ResponseIDs = append(row.ResponseIDs, resp[q])
				row.BehaviorLogps = append(row.BehaviorLogps, blp[q])
				row.ReferenceLogps = append(row.ReferenceLogps, rlp[q])
				if !slices.Equal(resp[q], resp[i*n]) {
					row.Identical = false
				}
			}
			r.Samples += int64(n)
			if row.Identical {
				r.Identical++
			} else {
				r.Pairs++
			}
			rows[i] = row
		}
		path := e.WS.SamplesPath(k, shard)
		r.Checkpoint = e.WS.Rel(path)
		return WriteJSONL(path, rows)
	})
}

// drawSamples draws n responses per prompt from the behavior model and scores them under it:
// with the built-in sampler, or through spec.sampler.engine's server (sample_remote.go). Row q is
// prompt q/n's sample q%n either way.
func (e *Env) drawSamples(k int, inf *model.Inference, tok tokenizer.Tokenizer, ids [][]int, n, lo int) (resp [][]int, blp []float64, err error) {
	rowPrompts := func(rows int) [][]int {
		out := make([][]int, rows)
		for i := range out {
			out[i] = ids[i/n]
		}
		return out
	}
	if e.samplerEngine() == nil {
		if resp, _, err = e.generate(v1alpha1.StageSample, inf, ids, n, e.samplerOptions(tok, e.streamSeed("sample", k)), lo); err != nil {
			return nil, nil, err
		}
		blp, _, err = inf.SequenceLogProbs(rowPrompts(len(resp)), resp)
		return resp, blp, err
	}
	rows, err := e.sampleRemote(k, tok, ids, n, lo)
	if err != nil {
		return nil, nil, err
	}
	resp = make([][]int, len(rows))
	for i, r := range rows {
		resp[i] = r.ids
	}
	blp, err = e.scoreServed(k, inf, rowPrompts(len(resp)), resp, rows)
	return resp, blp, err
}

// saveOnce writes a model snapshot unless it is there already. Every shard computes
// the same weights from the same files, so whichever rename lands last is identical.
func saveOnce(dir string, w *model.Weights) error {
	if _, err := os.Stat(dir + "/model.safetensors"); err == nil {
		if _, err := os.Stat(dir + "/config.json"); err == nil {
			return nil
		}
	}
	return model.SaveWeights(dir, w)
}

// saveBehaviorAdapter writes phase k's behavior model (the mean of the ensemble's members after
// phase k-1) also as one LoRA adapter of rank N*r in PEFT's layout, once: base + that adapter
// is exactly the merged behavior model, so a server that hot-loads LoRA adapters (vLLM, bpo
// serve) can sample from it without a dense checkpoint.
func (e *Env) saveBehaviorAdapter(k int) error {
	dir := e.WS.BehaviorAdapterDir(k)
	if _, err := os.Stat(filepath.Join(dir, model.PEFTConfigFileName)); err == nil {
		return nil // the config is written last
	}
	ms, err := e.Members(k - 1)
	if err != nil {
		return err
	}
	if err := e.saveEnsembleAdapter(dir, ms); err != nil {
		return fmt.Errorf("behavior adapter of phase %d: %w", k, err)
	}
	return nil
}

// guardedAnnotator is the run's annotator when it is a built-in guarded scorer (whose guard's
// share of the decisions the label stage reports), else nil.
func (e *Env) guardedAnnotator() *annotator.Guarded {
	s := e.Scorer
	if s == nil {
		a := e.Run.Spec.Labeler.Annotator
		if a.Kind != v1alpha1.AnnotatorBuiltin && a.Kind != "" {
			return nil
		}
		s, _ = annotator.Builtin(a.Name)
	}
	g, _ := s.(*annotator.Guarded)
	return g
}

// Label is the label stage of phase k, shard `shard`: the annotator scores every
// response of the matching sample shard; the best and worst responses become a pair;
// identical samples and ties (best score == worst score) are dropped and counted.
//
// Like Sample, the pod's shard and shards map onto the label count recorded for the phase.
func (e *Env) Label(k, shard, shards int) (v1alpha1.StageResult, error) {
	return e.runShards(k, v1alpha1.StageLabel, shard, shards, func(j, n int) (v1alpha1.StageResult, error) {
		return e.labelShard(k, j, n)
	})
}

// labelShard labels shard `shard` of `shards` (the recorded count) of phase k's sample rows.
func (e *Env) labelShard(k, shard, shards int) (v1alpha1.StageResult, error) {
	return e.once(k, v1alpha1.StageLabel, shard, func(r *v1alpha1.StageResult) error {
		scorer, err := e.Annotator(k, v1alpha1.StageLabel, shard)
		if err != nil {
			return err
		}
		rows, err := e.phaseSamples(k)
		if err != nil {
			return err
		}
		lo, hi := ShardRange(len(rows), shard, shards)
		var items []annotator.Item
		for _, row := range rows[lo:hi] {
			if !row.Identical {
				items = append(items, annotator.Item{Prompt: row.Prompt, Responses: row.Responses})
			}
		}
		all, err := scorer.ScoreBatch(context.Background(), items)
		if err != nil {
			return fmt.Errorf("spec.labeler.annotator: %w", err)
		}
		r.Annotation = scorer.Spent()
		var pairs []Pair
		for i, row := range rows[lo:hi] {
			e.progress(v1alpha1.StageLabel, i+1, hi-lo)
			if row.Identical {
				r.Identical++
				continue
			}
			best, worst := 0, 0
			scores := all[0]
			all = all[1:]
			for j := range row.Responses {
				if scores[j] > scores[best] {
					best = j
				}
				if scores[j] < scores[worst] {
					worst = j
				}
			}
			if scores[best] == scores[worst] {
				r.Ties++
				continue
			}
			pairs = append(pairs, Pair{
				Prompt: row.Prompt, Chosen: row.Responses[best], Rejected: row.Responses[worst],
				ScoreChosen: scores[best], ScoreRejected: scores[worst],
				Phase: k, Index: row.Index,
				PromptIDs: row.PromptIDs, ChosenIDs: row.ResponseIDs[best], RejectedIDs: row.ResponseIDs[worst],
				BehaviorLogps:  [2]float64{row.BehaviorLogps[best], row.BehaviorLogps[worst]},
				ReferenceLogps: [2]float64{row.ReferenceLogps[best], row.ReferenceLogps[worst]},
			})
		}
		r.Pairs = int64(len(pairs))
		if g := e.guardedAnnotator(); g != nil {
			var n int64
			for _, p := range pairs {
				if annotator.GuardDecided(g, p.Chosen, p.Rejected) {
					n++
				}
			}
			r.GuardDecided = &n
		}
		path := e.WS.PairsPath(k, shard)
		r.Checkpoint = e.WS.Rel(path)
		return WriteJSONL(path, pairs)
	})
}

// phaseSamples reads every sample shard of phase k in prompt order: the recorded number of
// shards, which must hold every prompt of the phase exactly once, in order. The label stage may
// run with another parallelism than the sampler, so it reads them all and takes its range.
func (e *Env) phaseSamples(k int) ([]SampleRow, error) {
	n, err := e.recordedShards(k, v1alpha1.StageSample)
	if err != nil {
		return nil, err
	}
	prompts, err := e.PhasePrompts(k)
	if err != nil {
		return nil, err
	}
	var all []SampleRow
	for s := 0; s < n; s++ {
		r, done := e.Done(k, v1alpha1.StageSample, s)
		if !done {
			return nil, fmt.Errorf("sample shard %d of %d of phase %d has not finished: run the sample stage first", s, n, k)
		}
		path := e.WS.SamplesPath(k, s)
		rows, err := ReadJSONL[SampleRow](path)
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("sample shard %d of phase %d is missing (%s): run the sample stage first", s, k, path)
		}
		if err != nil {
			return nil, fmt.Errorf("sample shard %d of phase %d is unreadable: %w; %s", s, k, err, resample(e.WS.DonePath(k, v1alpha1.StageSample, s)))
		}
		// Its done marker counts every row it wrote: a file cut at a line boundary reads
		// cleanly, and only this names the file (the total below cannot).
		if want := r.Pairs + r.Identical; int64(len(rows)) != want {
			return nil, fmt.Errorf("sample shard %d of phase %d (%s) holds %d rows, its sample stage wrote %d: the file was truncated or changed after sampling; %s",
				s, k, path, len(rows), want, resample(e.WS.DonePath(k, v1alpha1.StageSample, s)))
		}
		all = append(all, rows...)
	}
	// Every prompt once, in order: a lost, repeated or truncated shard stops here.
	if len(all) != len(prompts) {
		return nil, fmt.Errorf("phase %d: the %d sample shards hold %d rows, the phase has %d prompts: a shard file is truncated or was written for another shard count", k, n, len(all), len(prompts))
	}
	for i, row := range all {
		if row.Index != i {
			return nil, fmt.Errorf("phase %d: sample row %d has prompt index %d, want %d: the shard files do not cover the prompts once each", k, i, row.Index, i)
		}
	}
	return all, nil
}

// resample is the fix for a damaged sample shard: its done marker makes the sample stage a no-op,
// so the shard is only sampled again once the marker is gone.
func resample(marker string) string {
	return fmt.Sprintf("delete it and its done marker %s to sample it again", marker)
}

// PhasePairs reads every labelled pair of phase k, in prompt order: the recorded number of label
// shards, each checked against its done marker, and together accounting for every sample row
// (kept, tie or identical) exactly once.
func (e *Env) PhasePairs(k int) ([]Pair, error) {
	n, err := e.recordedShards(k, v1alpha1.StageLabel)
	if err != nil {
		return nil, err
	}
	var all []Pair
	var accounted int64
	for s := 0; s < n; s++ {
		r, done := e.Done(k, v1alpha1.StageLabel, s)
		if !done {
			return nil, fmt.Errorf("label shard %d of %d of phase %d has not finished: run the label stage first", s, n, k)
		}
		rows, err := ReadJSONL[Pair](e.WS.PairsPath(k, s))
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("pair shard %d of phase %d is missing (%s): run the label stage first", s, k, e.WS.PairsPath(k, s))
		}
		if err != nil {
			return nil, err
		}
		if int64(len(rows)) != r.Pairs {
			return nil, fmt.Errorf("pair shard %d of phase %d holds %d pairs, its label stage kept %d (%s): the file was changed after labelling", s, k, len(rows), r.Pairs, e.WS.PairsPath(k, s))
		}
		accounted += r.Pairs + r.Ties + r.Identical
		all = append(all, rows...)
	}
	if samples, err := e.recordedSampleRows(k); err != nil {
		return nil, err
	} else if accounted != samples {
		return nil, fmt.Errorf("phase %d: the %d label shards account for %d sample rows (kept, ties, identical), the samples hold %d", k, n, accounted, samples)
	}
	return all, nil
}

// recordedSampleRows is the number of prompts phase k's sample shards cover, from their done
// markers (every row is a candidate pair or identical).
func (e *Env) recordedSampleRows(k int) (int64, error) {
	n, err := e.recordedShards(k, v1alpha1.StageSample)
	if err != nil {
		return 0, err
	}
	var rows int64
	for s := 0; s < n; s++ {
		r, done := e.Done(k, v1alpha1.StageSample, s)
		if !done {
			return 0, fmt.Errorf("sample shard %d of %d of phase %d has not finished", s, n, k)
		}
		rows += r.Pairs + r.Identical
	}
	return rows, nil
}
