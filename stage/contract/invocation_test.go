package contract

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/pflag"

	"github.com/bpo-dev/bpo/api/v1alpha1"
)

func spec(sampleShards, labelShards *int32, members int32, dataCM bool) *v1alpha1.AlignmentRunSpec {
	s := &v1alpha1.AlignmentRunSpec{}
	s.Sampler.Parallelism, s.Labeler.Parallelism = sampleShards, labelShards
	s.Ensemble.Members = members
	if dataCM {
		s.Data.ConfigMap = &v1alpha1.ConfigMapDataSource{Name: "prompts"}
	}
	return s
}

func i32(v int32) *int32 { return &v }

func TestCompletions(t *testing.T) {
	cases := []struct {
		spec  *v1alpha1.AlignmentRunSpec
		stage string
		want  int32
	}{
		{spec(nil, nil, 0, false), v1alpha1.StageSample, 1},
		{spec(i32(3), nil, 0, false), v1alpha1.StageSample, 3},
		{spec(i32(3), i32(2), 0, false), v1alpha1.StageLabel, 2},
		{spec(nil, nil, 0, false), v1alpha1.StageTrain, 1},
		{spec(i32(3), i32(2), 4, false), v1alpha1.StageTrain, 4},
		{spec(i32(3), i32(2), 4, false), v1alpha1.StageEval, 1},
	}
	for _, tc := range cases {
		if got := Completions(tc.spec, tc.stage); got != tc.want {
			t.Errorf("%s: %d completions, want %d", tc.stage, got, tc.want)
		}
	}
}

func TestCheckPhase(t *testing.T) {
	cases := []struct {
		stage      string
		k          int
		everyPhase bool
		wantErr    string
	}{
		{v1alpha1.StageEval, 0, false, ""},
		{v1alpha1.StageEval, 3, false, ""},
		{v1alpha1.StageEval, -1, false, "--phase must be >= 0"},
		{v1alpha1.StageTrain, 0, false, "--phase must be >= 1"},
		{v1alpha1.StageSample, 1, false, ""},
		{v1alpha1.StageLabel, 4, false, "beyond spec.trustRegion.phases (3)"},
		{v1alpha1.StageReport, 2, true, "the last phase"},
		{v1alpha1.StageReport, 3, false, ""},
		{v1alpha1.StageExport, 3, false, ""},
		{v1alpha1.StageExport, 2, false, "set spec.output.everyPhase"},
		{v1alpha1.StageExport, 2, true, ""},
		{v1alpha1.StageExport, 0, true, "--phase must be >= 1"},
		{v1alpha1.StageExport, 4, true, "beyond spec.trustRegion.phases (3)"},
	}
	for _, tc := range cases {
		err := CheckPhase(tc.stage, tc.k, 3, tc.everyPhase)
		if (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%s phase %d: %v, want %q", tc.stage, tc.k, err, tc.wantErr)
		}
	}
}

// TestPodInvocationArgs pins the controller's command line of each stage.
func TestPodInvocationArgs(t *testing.T) {
	s := spec(i32(3), i32(2), 4, true)
	cases := map[string]string{
		v1alpha1.StageSample: "--config /etc/bpo/run.yaml --workspace /workspace --phase 2 --shards 3 --data-dir /etc/bpo/data --termination-log /dev/termination-log",
		v1alpha1.StageLabel:  "--config /etc/bpo/run.yaml --workspace /workspace --phase 2 --shards 2 --data-dir /etc/bpo/data --termination-log /dev/termination-log",
		v1alpha1.StageTrain:  "--config /etc/bpo/run.yaml --workspace /workspace --phase 2 --data-dir /etc/bpo/data --termination-log /dev/termination-log",
		v1alpha1.StageEval:   "--config /etc/bpo/run.yaml --workspace /workspace --phase 2 --data-dir /etc/bpo/data --termination-log /dev/termination-log",
	}
	for stage, want := range cases {
		if got := strings.Join(PodInvocation(s, stage, 2).Args(), " "); got != want {
			t.Errorf("%s:\n got %s\nwant %s", stage, got, want)
		}
	}
	// Without spec.data.configMap the data directory is not passed.
	if got := PodInvocation(spec(nil, nil, 1, false), v1alpha1.StageSample, 1).Args(); strings.Contains(strings.Join(got, " "), "--data-dir") {
		t.Errorf("args %v pass --data-dir without spec.data.configMap", got)
	}
}

// TestArgsRoundTrip parses every stage's invocation with the flags Register defines: the stage
// sees what was built, with Defaults for what Args leaves out.
func TestArgsRoundTrip(t *testing.T) {
	var invs []Invocation
	for _, stage := range Stages {
		for _, s := range []*v1alpha1.AlignmentRunSpec{spec(nil, nil, 1, false), spec(i32(3), i32(2), 4, true)} {
			for _, k := range []int32{0, 1, 7} {
				invs = append(invs, PodInvocation(s, stage, k))
			}
		}
		// Every field set (conformance and local runs pass --index; eval takes --split).
		invs = append(invs, Invocation{Stage: stage, Config: "/c/run.yaml", Workspace: "/w", DataDir: "/d",
			TerminationLog: "", Phase: 5, Shards: 6, Index: 2, Split: "validation"})
	}
	for _, inv := range invs {
		fs := pflag.NewFlagSet(inv.Stage, pflag.ContinueOnError)
		got := Register(fs, inv.Stage)
		if err := fs.Parse(inv.Args()); err != nil {
			t.Fatalf("%+v: %v", inv, err)
		}
		if d := cmp.Diff(inv.WithDefaults(), *got); d != "" {
			t.Errorf("%s %v (-built +parsed):\n%s", inv.Stage, inv.Args(), d)
		}
	}
}

func TestRegisterDefaults(t *testing.T) {
	fs := pflag.NewFlagSet("eval", pflag.ContinueOnError)
	got := Register(fs, v1alpha1.StageEval)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(Defaults(v1alpha1.StageEval), *got); d != "" {
		t.Error(d)
	}
	if fs.Lookup(FlagSplit) == nil {
		t.Error("--split is eval's")
	}
	fs = pflag.NewFlagSet("train", pflag.ContinueOnError)
	Register(fs, v1alpha1.StageTrain)
	if err := fs.Parse([]string{"--split", "validation"}); err == nil {
		t.Error("train accepted --split")
	}
}

func TestResolveIndex(t *testing.T) {
	env := func(v string, ok bool) func(string) (string, bool) {
		return func(name string) (string, bool) {
			if name != EnvCompletionIndex {
				t.Fatalf("looked up %s", name)
			}
			return v, ok
		}
	}
	cases := []struct {
		stage   string
		index   int
		lookup  func(string) (string, bool)
		want    int
		wantErr string
	}{
		{v1alpha1.StageSample, -1, env("2", true), 2, ""},
		{v1alpha1.StageSample, 1, env("2", true), 1, ""},
		{v1alpha1.StageTrain, -1, env("", false), -1, "--index is not set and JOB_COMPLETION_INDEX is not in the environment"},
		{v1alpha1.StageLabel, -1, env("x", true), -1, `JOB_COMPLETION_INDEX="x" is not a non-negative integer`},
		{v1alpha1.StageLabel, -1, env("-3", true), -1, `JOB_COMPLETION_INDEX="-3"`},
		{v1alpha1.StageEval, -1, env("", false), 0, ""},
	}
	for _, tc := range cases {
		inv := Invocation{Stage: tc.stage, Index: tc.index}
		err := inv.ResolveIndex(tc.lookup)
		if (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%s index %d: %v, want %q", tc.stage, tc.index, err, tc.wantErr)
		}
		if err == nil && inv.Index != tc.want {
			t.Errorf("%s: index %d, want %d", tc.stage, inv.Index, tc.want)
		}
	}
}

// TestCommandLine: bpo's own stage puts the contract's flags before spec.<stage>.args; a custom
// command gets its args first and the contract's flags after them, never without them.
func TestCommandLine(t *testing.T) {
	inv := PodInvocation(spec(i32(2), nil, 1, false), v1alpha1.StageSample, 3)
	flags := "--config /etc/bpo/run.yaml --workspace /workspace --phase 3 --shards 2 --termination-log /dev/termination-log"
	cases := []struct {
		name           string
		command, extra []string
		wantCmd        string
		wantArgs       string
	}{
		{"bpo", nil, nil, "bpo", "sample " + flags},
		{"bpo with args", nil, []string{"--threads", "2"}, "bpo", "sample " + flags + " --threads 2"},
		{"custom", []string{"python3", "stage.py"}, nil, "python3 stage.py", flags},
		{"custom with args", []string{"my-sampler"}, []string{"sample", "--engine", "x"}, "my-sampler", "sample --engine x " + flags},
	}
	for _, tc := range cases {
		cmd, args := inv.CommandLine(tc.command, tc.extra)
		if got := strings.Join(cmd, " "); got != tc.wantCmd {
			t.Errorf("%s: command %q, want %q", tc.name, got, tc.wantCmd)
		}
		if got := strings.Join(args, " "); got != tc.wantArgs {
			t.Errorf("%s: args %q, want %q", tc.name, got, tc.wantArgs)
		}
	}
	// The caller's slices are not aliased.
	command, extra := []string{"a"}, make([]string, 1, 8)
	cmd, args := inv.CommandLine(command, extra)
	cmd[0], args[0] = "x", "y"
	if command[0] != "a" || extra[0] != "" {
		t.Errorf("CommandLine changed its inputs: %v %v", command, extra)
	}
}
