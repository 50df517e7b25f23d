package contract

import (
	"fmt"
	"slices"
	"strconv"

	"github.com/spf13/pflag"

	"github.com/bpo-dev/bpo/api/v1alpha1"
)

// Mount paths and files of a stage pod.
const (
	// ConfigMountPath holds run.yaml (from the run's spec ConfigMap) and, with
	// spec.data.configMap, the data keys under DataDirName.
	ConfigMountPath = "/etc/bpo"
	// RunConfigKey is run.yaml's key in the spec ConfigMap and its file name in ConfigMountPath.
	RunConfigKey = "run.yaml"
	// DataDirName is the folder of ConfigMountPath that holds spec.data.configMap's keys.
	DataDirName = "data"
	// WorkspaceMountPath is where the workspace volume is mounted.
	WorkspaceMountPath = "/workspace"
	// TerminationLogPath is the container's terminationMessagePath.
	TerminationLogPath = "/dev/termination-log"

	// ModelImageMountPath is where an oci:// spec.model.uri is mounted (an image volume).
	ModelImageMountPath = "/models/base"

	ConfigPath  = ConfigMountPath + "/" + RunConfigKey
	DataDirPath = ConfigMountPath + "/" + DataDirName
)

// Environment of a stage pod.
const (
	// EnvCompletionIndex is set by the Indexed Job: the pod's completion index (--index
	// overrides it).
	EnvCompletionIndex = "JOB_COMPLETION_INDEX"
	// EnvRunName and EnvRunUID identify the run (the workspace records the owner uid and a
	// stage refuses a foreign one).
	EnvRunName = "BPO_RUN_NAME"
	EnvRunUID  = "BPO_RUN_UID"
	// EnvAnnotatorToken (label and eval pods) and EnvEvaluatorToken (eval pods) carry the
	// remote annotator's and judge's secretRef.
	EnvAnnotatorToken = v1alpha1.EnvAnnotatorToken
	EnvEvaluatorToken = v1alpha1.EnvEvaluatorToken
	// EnvSamplerToken (sample pods) carries spec.sampler.engine's secretRef.
	EnvSamplerToken = v1alpha1.EnvSamplerToken
	// EnvProgressURL is where a stage posts its live progress (the manager's progress endpoint,
	// when the manager has one) with the token in EnvProgressTokenFile (docs/design.md, "Live
	// progress"). Absent: the stage reports no progress.
	EnvProgressURL       = "BPO_PROGRESS_URL"
	EnvProgressTokenFile = "BPO_PROGRESS_TOKEN_FILE"
)

// The progress token: a projected service-account token for ProgressAudience only, bound to the
// pod, mounted read-only at ProgressTokenDir.
const (
	ProgressAudience  = "progress.alignment.bpo.dev"
	ProgressTokenDir  = "/var/run/secrets/alignment.bpo.dev/progress"
	ProgressTokenFile = ProgressTokenDir + "/token"
	// ProgressTokenSeconds is the token's lifetime; the kubelet renews it at 80%.
	ProgressTokenSeconds = 3600
	// ProgressPath is the endpoint's path under EnvProgressURL.
	ProgressPath = "/v1/progress"
)

// Flag names of the `<command> <stage>` invocation.
const (
	FlagConfig         = "config"
	FlagWorkspace      = "workspace"
	FlagDataDir        = "data-dir"
	FlagTerminationLog = "termination-log"
	FlagPhase          = "phase"
	FlagShards         = "shards"
	FlagIndex          = "index"
	FlagSplit          = "split"
)

// Invocation is one stage process's command line after `<command> <stage>`. The controller
// builds it (PodInvocation, Args); the `bpo <stage>` commands parse it (Register).
type Invocation struct {
	// Stage is the subcommand (not a flag).
	Stage          string
	Config         string
	Workspace      string
	DataDir        string // empty: not passed (the stage's default)
	TerminationLog string // empty: stdout only
	Phase          int
	Shards         int    // sample, label; 0: not passed
	Index          int    // negative: not passed (EnvCompletionIndex)
	Split          string // eval; empty: not passed
}

// Defaults is the invocation a stage assumes for every flag not given: the pod's paths.
func Defaults(stage string) Invocation {
	inv := Invocation{
		Stage: stage, Config: ConfigPath, Workspace: WorkspaceMountPath, DataDir: DataDirPath,
		TerminationLog: TerminationLogPath, Shards: 1, Index: -1,
	}
	if stage == v1alpha1.StageEval {
		inv.Split = "eval"
	}
	return inv
}

// WithDefaults fills the fields Args leaves out with Defaults: what the stage sees.
func (inv Invocation) WithDefaults() Invocation {
	d := Defaults(inv.Stage)
	if inv.DataDir == "" {
		inv.DataDir = d.DataDir
	}
	if inv.Shards <= 0 || !Sharded(inv.Stage) {
		inv.Shards = d.Shards
	}
	if inv.Index < 0 {
		inv.Index = d.Index
	}
	if inv.Split == "" || inv.Stage != v1alpha1.StageEval {
		inv.Split = d.Split
	}
	return inv
}

// PodInvocation is the invocation of stage's pods in phase k of a run with this spec. The data directory
// is passed explicitly whenever spec.data.configMap is set, so that the stage never relies on a
// compiled-in default for where the data is; the index comes from EnvCompletionIndex.
func PodInvocation(spec *v1alpha1.AlignmentRunSpec, stage string, k int32) Invocation {
	inv := Invocation{
		Stage: stage, Config: ConfigPath, Workspace: WorkspaceMountPath,
		TerminationLog: TerminationLogPath, Phase: int(k), Index: -1,
	}
	if Sharded(stage) {
		inv.Shards = int(Completions(spec, stage))
	}
	if spec.Data.ConfigMap != nil {
		inv.DataDir = DataDirPath
	}
	return inv
}

// Args renders the invocation as flags, in a fixed order.
func (inv Invocation) Args() []string {
	args := []string{
		"--" + FlagConfig, inv.Config,
		"--" + FlagWorkspace, inv.Workspace,
		"--" + FlagPhase, strconv.Itoa(inv.Phase),
	}
	if Sharded(inv.Stage) && inv.Shards > 0 {
		args = append(args, "--"+FlagShards, strconv.Itoa(inv.Shards))
	}
	if inv.Index >= 0 {
		args = append(args, "--"+FlagIndex, strconv.Itoa(inv.Index))
	}
	if inv.DataDir != "" {
		args = append(args, "--"+FlagDataDir, inv.DataDir)
	}
	if inv.Split != "" && inv.Stage == v1alpha1.StageEval {
		args = append(args, "--"+FlagSplit, inv.Split)
	}
	// Passed even when empty: an empty --termination-log means stdout only, not the default.
	return append(args, "--"+FlagTerminationLog, inv.TerminationLog)
}

// DefaultCommand is the stage image's program: `bpo <stage>` runs a stage.
const DefaultCommand = "bpo"

// CommandLine is a stage process's command and arguments: without a custom command,
// `bpo <stage>`, the contract's flags (Args), then extra (spec.<stage>.args); with one
// (spec.<stage>.command), that command, extra, then the contract's flags, so that a custom stage
// learns its phase, shards and paths exactly as bpo's own does. The controller's Jobs, `bpo run`'s
// external train command and `bpo conformance` all build their command lines here.
func (inv Invocation) CommandLine(command, extra []string) (cmd, args []string) {
	if len(command) > 0 {
		return slices.Clone(command), append(slices.Clone(extra), inv.Args()...)
	}
	args = append([]string{inv.Stage}, inv.Args()...)
	return []string{DefaultCommand}, append(args, extra...)
}

// Register defines the stage's flags on fs, with Defaults, and returns the invocation they fill.
func Register(fs *pflag.FlagSet, stage string) *Invocation {
	d := Defaults(stage)
	inv := &Invocation{Stage: stage}
	fs.StringVar(&inv.Config, FlagConfig, d.Config, "the AlignmentRun manifest")
	fs.StringVar(&inv.Workspace, FlagWorkspace, d.Workspace, "root of the workspace volume")
	fs.StringVar(&inv.DataDir, FlagDataDir, d.DataDir, "where a ConfigMap data source is mounted")
	fs.StringVar(&inv.TerminationLog, FlagTerminationLog, d.TerminationLog, "file the JSON stage result is written to (empty: stdout only)")
	fs.IntVar(&inv.Phase, FlagPhase, d.Phase, "data-collection phase k, 1-based (eval also takes 0: the initial model)")
	fs.IntVar(&inv.Shards, FlagShards, d.Shards, "number of shards (sample, label)")
	fs.IntVar(&inv.Index, FlagIndex, d.Index, "shard (sample, label) or ensemble member (train); default $"+EnvCompletionIndex)
	switch stage {
	case v1alpha1.StageEval:
		fs.StringVar(&inv.Split, FlagSplit, d.Split, "held-out split: eval or validation")
	case v1alpha1.StageReport, v1alpha1.StageExport:
		// The report and export pods run with spec.evaluator's template, whose args may carry
		// --split; they read what the evaluations and the training wrote and have no use for it.
		fs.StringVar(&inv.Split, FlagSplit, "", "accepted for spec.evaluator.args; unused")
		_ = fs.MarkHidden(FlagSplit)
	}
	return inv
}

// ResolveIndex sets an index not given by --index from the Indexed Job's EnvCompletionIndex,
// read with lookup (os.LookupEnv). Eval, report and export have one pod: its index is 0.
func (inv *Invocation) ResolveIndex(lookup func(string) (string, bool)) error {
	if inv.Index >= 0 {
		return nil
	}
	if inv.Stage == v1alpha1.StageEval || inv.Stage == v1alpha1.StageReport || inv.Stage == v1alpha1.StageExport {
		inv.Index = 0
		return nil
	}
	v, ok := lookup(EnvCompletionIndex)
	if !ok {
		return fmt.Errorf("--%s is not set and %s is not in the environment", FlagIndex, EnvCompletionIndex)
	}
	i, err := strconv.Atoi(v)
	if err != nil || i < 0 {
		return fmt.Errorf("%s=%q is not a non-negative integer", EnvCompletionIndex, v)
	}
	inv.Index = i
	return nil
}
