package stage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/pipeline"
	"github.com/bpo-dev/bpo/stage/contract"
)

// Check is one conformance check's outcome. Names are stable (docs/stage-contract.md).
type Check struct {
	Name   string
	OK     bool
	Detail string
}

// Report is the outcome of a conformance run.
type Report struct{ Checks []Check }

// Passed reports whether every check passed.
func (r *Report) Passed() bool {
	return !slices.ContainsFunc(r.Checks, func(c Check) bool { return !c.OK })
}

// Failed returns the names of the failed checks.
func (r *Report) Failed() []string {
	var out []string
	for _, c := range r.Checks {
		if !c.OK {
			out = append(out, c.Name)
		}
	}
	return out
}

func (r *Report) add(name string, err error, okDetail string) {
	if err != nil {
		r.Checks = append(r.Checks, Check{Name: name, Detail: err.Error()})
		return
	}
	r.Checks = append(r.Checks, Check{Name: name, OK: true, Detail: okDetail})
}

// Print writes one line per check and a summary.
func (r *Report) Print(w io.Writer) {
	for _, c := range r.Checks {
		mark := "PASS"
		if !c.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(w, "%s  %-22s %s\n", mark, c.Name, strings.ReplaceAll(c.Detail, "\n", "\n"+strings.Repeat(" ", 29)))
	}
	if r.Passed() {
		fmt.Fprintf(w, "conforms to stage contract %s (%d checks)\n", ContractVersion, len(r.Checks))
	} else {
		fmt.Fprintf(w, "does NOT conform to stage contract %s: failed %s\n", ContractVersion, strings.Join(r.Failed(), ", "))
	}
}

// Conform copies the fixture's workspace, runs command once per completion index of the stage
// (as the Indexed Job's pods would, one after the other) with the contract's flags and
// environment, and checks what it wrote. log receives the command's stderr.
func Conform(ctx context.Context, f *Fixture, command []string, log io.Writer) (*Report, error) {
	if len(command) == 0 {
		return nil, errors.New("no command to test: give it after --, e.g. bpo conformance sample -- bpo sample")
	}
	vol := filepath.Join(f.Dir, "under-test")
	if err := os.RemoveAll(vol); err != nil {
		return nil, err
	}
	if err := os.CopyFS(vol, os.DirFS(f.Volume)); err != nil {
		return nil, fmt.Errorf("copy the fixture workspace: %w", err)
	}
	r := &Report{}
	for i := range f.Shards {
		runPod(ctx, r, f, vol, command, i, log)
	}
	env, err := pipeline.OpenEnv(f.Config, vol)
	if err != nil {
		return nil, err
	}
	checkOutputs(r, f, env)
	return r, nil
}

// invocation is the contract's command line of pod i's stage, as the controller builds it
// (contract.PodInvocation) with the fixture's paths.
func invocation(f *Fixture, vol, termLog string) contract.Invocation {
	inv := contract.Invocation{Stage: f.Stage, Config: f.Config, Workspace: vol, Phase: f.Phase, Index: -1, TerminationLog: termLog}
	if contract.Sharded(f.Stage) {
		inv.Shards = f.Shards
	}
	return inv
}

// runPod runs completion index i and checks its exit code and termination message.
func runPod(ctx context.Context, r *Report, f *Fixture, vol string, command []string, i int, log io.Writer) {
	termLog := filepath.Join(f.Dir, fmt.Sprintf("termination-log-%d", i))
	_ = os.Remove(termLog)
	name, args := invocation(f, vol, termLog).CommandLine(command, nil)
	cmd := exec.CommandContext(ctx, name[0], append(name[1:], args...)...)
	cmd.Env = append(os.Environ(),
		contract.EnvCompletionIndex+"="+strconv.Itoa(i),
		contract.EnvRunName+"="+f.Run.Name,
		contract.EnvRunUID+"="+string(f.Run.UID))
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, log
	err := cmd.Run()
	pod := fmt.Sprintf("[%d]", i)
	if err != nil {
		r.add("exit-code"+pod, fmt.Errorf("%s: %v", strings.Join(cmd.Args, " "), err), "")
	} else {
		r.add("exit-code"+pod, nil, "0")
	}
	_, err = terminationMessage(f, i, stdout.Bytes(), termLog)
	r.add("termination-message"+pod, err, "valid stage result on stdout and in the termination log")
}

// terminationMessage checks stdout's last line and the termination log: the same valid
// StageResult of at most MaxStageResultBytes, for this stage, phase and index.
func terminationMessage(f *Fixture, i int, stdout []byte, termLog string) (*v1alpha1.StageResult, error) {
	lines := strings.Split(strings.TrimRight(string(stdout), "\n"), "\n")
	last := []byte(lines[len(lines)-1])
	if len(bytes.TrimSpace(last)) == 0 {
		return nil, errors.New("stdout is empty: the last line must be the JSON stage result")
	}
	res, err := stageResult(f, i, last)
	if err != nil {
		return nil, fmt.Errorf("stdout's last line: %w", err)
	}
	logged, err := os.ReadFile(termLog)
	if err != nil {
		return nil, fmt.Errorf("termination log --termination-log %s: %w", termLog, err)
	}
	if _, err := stageResult(f, i, bytes.TrimSpace(logged)); err != nil {
		return nil, fmt.Errorf("termination log: %w", err)
	}
	return res, nil
}

// stageResult validates one StageResult document and its identity.
func stageResult(f *Fixture, index int, doc []byte) (*v1alpha1.StageResult, error) {
	if len(doc) > v1alpha1.MaxStageResultBytes {
		return nil, fmt.Errorf("%d bytes, over the %d-byte termination-message limit", len(doc), v1alpha1.MaxStageResultBytes)
	}
	if err := Validate(SchemaStageResult, doc); err != nil {
		return nil, err
	}
	var res v1alpha1.StageResult
	if err := json.Unmarshal(doc, &res); err != nil {
		return nil, err
	}
	if res.Stage != f.Stage || int(res.Phase) != f.Phase || int(res.Index) != index {
		return nil, fmt.Errorf("says stage %q phase %d index %d, want %q phase %d index %d", res.Stage, res.Phase, res.Index, f.Stage, f.Phase, index)
	}
	return &res, nil
}

// checkOutputs checks the workspace after every pod ran.
func checkOutputs(r *Report, f *Fixture, env *pipeline.Env) {
	ws := env.WS
	k := f.Phase
	var outputs [][]string // outputs[i]: the files completion i wrote, which its marker must not predate
	switch f.Stage {
	case v1alpha1.StageSample, v1alpha1.StageLabel:
		r.add("shard-plan", checkShardPlan(ws.ShardPlanPath(k, f.Stage), f), fmt.Sprintf("%s records %d shards", ws.Rel(ws.ShardPlanPath(k, f.Stage)), f.Shards))
	}
	markers := make([]*v1alpha1.StageResult, f.Shards)
	var markerErr error
	for i := range f.Shards {
		idx := i
		if f.Stage == v1alpha1.StageEval {
			idx = -1
		}
		path := ws.DonePath(k, f.Stage, idx)
		data, err := os.ReadFile(path)
		if err == nil {
			markers[i], err = stageResult(f, i, bytes.TrimSpace(data))
		}
		if err != nil {
			markerErr = errors.Join(markerErr, fmt.Errorf("%s: %w", ws.Rel(path), err))
		}
	}
	r.add("done-markers", markerErr, fmt.Sprintf("%d markers, valid stage results", f.Shards))
	switch f.Stage {
	case v1alpha1.StageSample:
		outputs = checkSamples(r, f, env)
	case v1alpha1.StageLabel:
		outputs = checkPairs(r, f, env, markers)
	case v1alpha1.StageTrain:
		outputs = checkMembers(r, f, env, markers)
	case v1alpha1.StageEval:
		outputs = checkEval(r, f, env)
	}
	if markerErr == nil {
		r.add("markers-written-last", markersLast(ws, f, outputs), "every done marker is newer than the outputs")
	}
}

func checkShardPlan(path string, f *Fixture) error {
	var p struct {
		Stage  string `json:"stage"`
		Phase  int    `json:"phase"`
		Shards int    `json:"shards"`
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, &p); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if p.Stage != f.Stage || p.Phase != f.Phase || p.Shards != f.Shards {
		return fmt.Errorf("%s is %+v, want stage %s phase %d shards %d", path, p, f.Stage, f.Phase, f.Shards)
	}
	return nil
}

// markersLast checks that no output of completion i is newer than its done marker: a marker is
// the last thing a stage writes, so a stage killed before it reruns in full.
func markersLast(ws *pipeline.Workspace, f *Fixture, outputs [][]string) error {
	for i, files := range outputs {
		idx := i
		if f.Stage == v1alpha1.StageEval {
			idx = -1
		}
		marker, err := os.Stat(ws.DonePath(f.Phase, f.Stage, idx))
		if err != nil {
			return err
		}
		for _, o := range files {
			st, err := os.Stat(o)
			if err != nil {
				return err
			}
			if st.ModTime().After(marker.ModTime()) {
				return fmt.Errorf("%s was written after its done marker %s", ws.Rel(o), marker.Name())
			}
		}
	}
	return nil
}

// readRows validates a JSONL output file against schema and decodes it the way the next stage
// reads it (pipeline.ReadJSONL: unknown fields rejected).
func readRows[T any](schema, path string) ([]T, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if _, err := ValidateJSONL(schema, path, data); err != nil {
		return nil, err
	}
	return pipeline.ReadJSONL[T](path)
}

func finiteLogps(where string, lps ...float64) error {
	for _, lp := range lps {
		if math.IsNaN(lp) || math.IsInf(lp, 0) || lp > 1e-3 {
			return fmt.Errorf("%s: log-prob %v is not a finite number <= 0", where, lp)
		}
	}
	return nil
}

func checkSamples(r *Report, f *Fixture, env *pipeline.Env) [][]string {
	ws, k := env.WS, f.Phase
	prompts, err := env.PhasePrompts(k)
	if err != nil {
		r.add("rows", err, "")
		return nil
	}
	n := int(env.Run.Spec.Budget.SamplesPerPrompt)
	paths := make([][]string, f.Shards)
	var schemaErr, rowsErr, lpErr error
	for j := range f.Shards {
		path := ws.SamplesPath(k, j)
		paths[j] = []string{path}
		rows, err := readRows[pipeline.SampleRow](SchemaSamplesRow, path)
		if err != nil {
			schemaErr = errors.Join(schemaErr, err)
			continue
		}
		lo, hi := pipeline.ShardRange(len(prompts), j, f.Shards)
		if len(rows) != hi-lo {
			rowsErr = errors.Join(rowsErr, fmt.Errorf("%s holds %d rows, shard %d of %d owns prompts [%d,%d): %d rows", ws.Rel(path), len(rows), j, f.Shards, lo, hi, hi-lo))
			continue
		}
		for i, row := range rows {
			where := fmt.Sprintf("%s:%d", ws.Rel(path), i+1)
			switch {
			case row.Index != lo+i:
				rowsErr = errors.Join(rowsErr, fmt.Errorf("%s: index %d, want %d (every prompt of the shard once, in order)", where, row.Index, lo+i))
			case row.Prompt != prompts[lo+i]:
				rowsErr = errors.Join(rowsErr, fmt.Errorf("%s: prompt %q is not the phase's prompt %d", where, row.Prompt, lo+i))
			case len(row.Responses) != n || len(row.ResponseIDs) != n || len(row.BehaviorLogps) != n || len(row.ReferenceLogps) != n:
				rowsErr = errors.Join(rowsErr, fmt.Errorf("%s: want spec.budget.samplesPerPrompt = %d responses, ids and log-probs each", where, n))
			}
			lpErr = errors.Join(lpErr, finiteLogps(where, row.BehaviorLogps...), finiteLogps(where, row.ReferenceLogps...))
		}
	}
	r.add("outputs-schema", schemaErr, fmt.Sprintf("%d sample shards valid %s rows", f.Shards, SchemaSamplesRow))
	if schemaErr == nil {
		r.add("rows", rowsErr, fmt.Sprintf("%d prompts, each once, in order, across %d shards", len(prompts), f.Shards))
		r.add("log-probs", lpErr, "finite and <= 0")
	}
	return paths
}

func checkPairs(r *Report, f *Fixture, env *pipeline.Env, markers []*v1alpha1.StageResult) [][]string {
	ws, k := env.WS, f.Phase
	var samples []pipeline.SampleRow
	for j := 0; ; j++ {
		rows, err := pipeline.ReadJSONL[pipeline.SampleRow](ws.SamplesPath(k, j))
		if errors.Is(err, os.ErrNotExist) {
			break
		}
		if err != nil {
			r.add("rows", fmt.Errorf("fixture samples: %w", err), "")
			return nil
		}
		samples = append(samples, rows...)
	}
	paths := make([][]string, f.Shards)
	var schemaErr, rowsErr, lpErr error
	kept := 0
	for j := range f.Shards {
		path := ws.PairsPath(k, j)
		paths[j] = []string{path}
		pairs, err := readRows[pipeline.Pair](SchemaPairsRow, path)
		if err != nil {
			schemaErr = errors.Join(schemaErr, err)
			continue
		}
		kept += len(pairs)
		lo, hi := pipeline.ShardRange(len(samples), j, f.Shards)
		if m := markers[j]; m != nil {
			if int(m.Pairs) != len(pairs) || int(m.Pairs+m.Ties+m.Identical) != hi-lo {
				rowsErr = errors.Join(rowsErr, fmt.Errorf("shard %d: marker says pairs %d + ties %d + identical %d, want %d pairs in the file and %d sample rows in all", j, m.Pairs, m.Ties, m.Identical, len(pairs), hi-lo))
			}
		}
		prev := lo - 1
		for i, p := range pairs {
			where := fmt.Sprintf("%s:%d", ws.Rel(path), i+1)
			if p.Index <= prev || p.Index >= hi || p.Phase != k {
				rowsErr = errors.Join(rowsErr, fmt.Errorf("%s: phase %d index %d, want phase %d and an index in (%d,%d), increasing", where, p.Phase, p.Index, k, prev, hi))
				continue
			}
			prev = p.Index
			s := samples[p.Index]
			c, rj := slices.Index(s.Responses, p.Chosen), slices.Index(s.Responses, p.Rejected)
			switch {
			case p.Prompt != s.Prompt || c < 0 || rj < 0:
				rowsErr = errors.Join(rowsErr, fmt.Errorf("%s: prompt, chosen and rejected must come from sample row %d", where, p.Index))
			case p.BehaviorLogps != [2]float64{s.BehaviorLogps[c], s.BehaviorLogps[rj]} || p.ReferenceLogps != [2]float64{s.ReferenceLogps[c], s.ReferenceLogps[rj]}:
				rowsErr = errors.Join(rowsErr, fmt.Errorf("%s: log-probs differ from sample row %d's", where, p.Index))
			case p.ScoreChosen <= p.ScoreRejected:
				rowsErr = errors.Join(rowsErr, fmt.Errorf("%s: score_chosen %v <= score_rejected %v (ties are dropped)", where, p.ScoreChosen, p.ScoreRejected))
			}
			lpErr = errors.Join(lpErr, finiteLogps(where, p.BehaviorLogps[:]...), finiteLogps(where, p.ReferenceLogps[:]...))
		}
	}
	r.add("outputs-schema", schemaErr, fmt.Sprintf("%d pair shards valid %s rows", f.Shards, SchemaPairsRow))
	if schemaErr == nil {
		r.add("rows", rowsErr, fmt.Sprintf("%d pairs from %d sample rows, each row kept, tied or identical once", kept, len(samples)))
		r.add("log-probs", lpErr, "finite, <= 0, copied from the sample rows")
	}
	return paths
}

func checkEval(r *Report, f *Fixture, env *pipeline.Env) [][]string {
	path := filepath.Join(env.WS.EvalDir(f.Phase), "result.json")
	data, err := os.ReadFile(path)
	if err == nil {
		err = Validate(SchemaEvalResult, data)
	}
	r.add("outputs-schema", err, "eval/result.json is a valid "+SchemaEvalResult)
	if err != nil {
		return nil
	}
	res, err := env.LoadEval(f.Phase)
	if err == nil && (res.Phase != f.Phase || res.Prompts != int(env.Run.Spec.Budget.EvalPrompts) || len(res.PerPrompt) != res.Prompts) {
		err = fmt.Errorf("phase %d, %d prompts, %d perPrompt records; want phase %d and spec.budget.evalPrompts = %d of each", res.Phase, res.Prompts, len(res.PerPrompt), f.Phase, env.Run.Spec.Budget.EvalPrompts)
	}
	r.add("rows", err, "one perPrompt record per evaluated prompt")
	return [][]string{{path}}
}
