package controllers

import (
	"maps"
	"slices"
	"strings"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	alignv1 "github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/controllers/testutil"
	"github.com/bpo-dev/bpo/stage/contract"
)

// TestBuildJob covers the parts of the pod template that the envtest flow does not: the HTTP
// annotator's Secret, ConfigMap data, command/args overrides and scheduling fields.
func TestBuildJob(t *testing.T) {
	t.Parallel()
	r := &AlignmentRunReconciler{StageImage: "img:default", StageImagePullPolicy: corev1.PullAlways}
	tol := corev1.Toleration{Key: "gpu", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}
	run := testutil.MakeRun("ns", "unit").
		HTTPAnnotator("https://rm.example/score", "rm-token", "token").
		DataConfigMap("prompts").
		SamplerTolerations(tol).SamplerNodeSelector(map[string]string{"pool": "cpu"}).
		Mutate(func(a *alignv1.AlignmentRun) {
			a.UID = "uid-7"
			a.Spec.Sampler.Args = []string{"--verbose"}
			a.Spec.Evaluator.Command = []string{"/bin/custom-eval"}
			a.Spec.Evaluator.Args = []string{"--x"}
		}).Defaulted()

	cases := map[string]struct {
		stage   string
		command []string
		argsHas []string
		argsNot []string
		envHas  string
		envNot  string
	}{
		"sample: default command plus extra args and scheduling": {
			stage: "sample", command: []string{"bpo"}, argsHas: []string{"--shards", "--verbose", "--data-dir", "/etc/bpo/data"}, envNot: contract.EnvAnnotatorToken,
		},
		"label: the annotator token from the Secret": {
			stage: "label", command: []string{"bpo"}, argsHas: []string{"--shards"}, envHas: contract.EnvAnnotatorToken,
		},
		"train: no shards": {
			stage: "train", command: []string{"bpo"}, argsNot: []string{"--shards"}, envNot: contract.EnvAnnotatorToken,
		},
		"eval: command override gets its args, then the contract's flags; scores with the annotator too": {
			stage: "eval", command: []string{"/bin/custom-eval"}, argsHas: []string{"--x", "--config", "--phase", "--data-dir"}, argsNot: []string{"eval"}, envHas: contract.EnvAnnotatorToken,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			job := r.buildJob(run, 2, tc.stage, 1)
			if job.Name != "unit-p2-"+tc.stage+"-a1" || job.Labels[alignv1.LabelAttempt] != "1" || job.Labels[alignv1.LabelPhase] != "2" {
				t.Errorf("name %s labels %v", job.Name, job.Labels)
			}
			pod := job.Spec.Template.Spec
			c := pod.Containers[0]
			if !slices.Equal(c.Command, tc.command) || c.Image != "img:default" || c.ImagePullPolicy != corev1.PullAlways {
				t.Errorf("command %v image %s %s", c.Command, c.Image, c.ImagePullPolicy)
			}
			for _, a := range tc.argsHas {
				if !slices.Contains(c.Args, a) {
					t.Errorf("args %v lack %s", c.Args, a)
				}
			}
			for _, a := range tc.argsNot {
				if slices.Contains(c.Args, a) {
					t.Errorf("args %v contain %s", c.Args, a)
				}
			}
			env := map[string]corev1.EnvVar{}
			for _, e := range c.Env {
				env[e.Name] = e
			}
			if env[contract.EnvRunUID].Value != "uid-7" {
				t.Errorf("env %v", c.Env)
			}
			if tc.envHas != "" {
				ref := env[tc.envHas].ValueFrom
				if ref == nil || ref.SecretKeyRef == nil || ref.SecretKeyRef.Name != "rm-token" || ref.SecretKeyRef.Key != "token" {
					t.Errorf("%s = %+v", tc.envHas, env[tc.envHas])
				}
			}
			if _, ok := env[tc.envNot]; tc.envNot != "" && ok {
				t.Errorf("%s leaked into the %s stage", tc.envNot, tc.stage)
			}
			// /etc/bpo holds run.yaml and the data ConfigMap's keys under data/.
			var paths []string
			for _, v := range pod.Volumes {
				if v.Projected != nil {
					for _, src := range v.Projected.Sources {
						for _, it := range src.ConfigMap.Items {
							paths = append(paths, src.ConfigMap.Name+":"+it.Key+"->"+it.Path)
						}
					}
				}
			}
			if got := strings.Join(paths, ","); got != "unit-spec:run.yaml->run.yaml,prompts:prompts.jsonl->data/prompts.jsonl,prompts:eval.jsonl->data/eval.jsonl" {
				t.Errorf("projected config %s", got)
			}
			if (tc.stage == "sample") != (len(pod.Tolerations) == 1 && pod.NodeSelector["pool"] == "cpu") {
				t.Errorf("%s: tolerations %v nodeSelector %v", tc.stage, pod.Tolerations, pod.NodeSelector)
			}
			if *pod.AutomountServiceAccountToken {
				t.Errorf("service account token mounted into stage pods")
			}
			// Read-only root filesystem, with /tmp as the scratch emptyDir.
			if sc := pod.Containers[0].SecurityContext; sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Errorf("stage container root filesystem is writable")
			}
			hasTmp := false
			for _, m := range pod.Containers[0].VolumeMounts {
				hasTmp = hasTmp || m.MountPath == "/tmp"
			}
			if !hasTmp {
				t.Errorf("no /tmp mount with a read-only root filesystem")
			}
			// Disruptions (drains, preemption) do not spend the stage's attempts.
			if pfp := job.Spec.PodFailurePolicy; pfp == nil || len(pfp.Rules) != 1 || pfp.Rules[0].Action != batchv1.PodFailurePolicyActionIgnore ||
				len(pfp.Rules[0].OnPodConditions) != 1 || pfp.Rules[0].OnPodConditions[0].Type != corev1.DisruptionTarget {
				t.Errorf("podFailurePolicy %+v: want DisruptionTarget ignored", pfp)
			}
		})
	}
}

// TestBuildJobSamplerToken: spec.sampler.engine's secretRef reaches the sample pods, and only
// them, as an environment variable that refers to the Secret (never its value).
func TestBuildJobSamplerToken(t *testing.T) {
	t.Parallel()
	r := &AlignmentRunReconciler{StageImage: "img"}
	ref := &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "vllm-key"}, Key: "token"}
	for _, tc := range []struct {
		name   string
		engine *alignv1.SamplerEngine
		want   bool
	}{
		{"builtin", nil, false},
		{"OpenAI without a secret", &alignv1.SamplerEngine{Kind: alignv1.SamplerEngineOpenAI, URL: "http://vllm/v1", Model: "m"}, false},
		{"OpenAI with a secret", &alignv1.SamplerEngine{Kind: alignv1.SamplerEngineOpenAI, URL: "https://vllm/v1", Model: "m", SecretRef: ref}, true},
	} {
		run := testutil.MakeRun("ns", "eng").Mutate(func(a *alignv1.AlignmentRun) { a.Spec.Sampler.Engine = tc.engine }).Defaulted()
		for _, stage := range contract.Stages {
			var got *corev1.EnvVar
			for _, e := range r.buildJob(run, 1, stage, 0).Spec.Template.Spec.Containers[0].Env {
				if e.Name == contract.EnvSamplerToken {
					got = &e
				}
			}
			want := tc.want && stage == alignv1.StageSample
			if (got != nil) != want {
				t.Errorf("%s, %s: %s present %v, want %v", tc.name, stage, contract.EnvSamplerToken, got != nil, want)
			}
			if got != nil && (got.Value != "" || got.ValueFrom == nil || got.ValueFrom.SecretKeyRef == nil || *got.ValueFrom.SecretKeyRef != *ref) {
				t.Errorf("%s: %+v, want a reference to %+v", tc.name, got, ref)
			}
		}
	}
}

// TestFoldResults checks the folding rules of docs/design.md on hand-made results, including a
// missing index and a result without metrics.
func TestFoldResults(t *testing.T) {
	t.Parallel()
	f := func(v float64) *float64 { return &v }
	st := &alignv1.AlignmentRunStatus{}
	pr := &alignv1.PhaseResult{Phase: 1}
	foldResults(st, pr, "train", map[int32]alignv1.StageResult{
		0: {Loss: f(0.5), RewardAccuracy: f(1), Checkpoint: "phase-1/members/member-0"},
		2: {Loss: f(0.7)},
	})
	if pr.Loss != "0.6" || pr.RewardAccuracy != "1" || pr.RewardMargin != "" || st.LatestCheckpoint != "phase-1/members/member-0" {
		t.Errorf("train fold: %+v %+v", pr, st)
	}
	foldResults(st, pr, "eval", map[int32]alignv1.StageResult{0: {WinRate: f(0.73456), KLToInitial: f(0.01), TrainPairAccuracy: f(0.8), Fluency: f(0.5)}})
	if pr.WinRate != "0.7346" || st.LatestWinRate != "0.7346" || pr.KLToInitial != "0.01" || pr.TrainPairAccuracy != "0.8" || pr.Fluency != "0.5" {
		t.Errorf("eval fold: %+v", pr)
	}
}

// The pair diagnostics: member 0 of phase k's train reports the fresh-pair accuracy of phase k
// and the train-pair accuracy of phase k-1, which lands on phase k-1's entry; label shards'
// guard-decided pairs add up to a fraction of the pairs kept.
func TestFoldPairDiagnostics(t *testing.T) {
	t.Parallel()
	f := func(v float64) *float64 { return &v }
	n := func(v int64) *int64 { return &v }
	st := &alignv1.AlignmentRunStatus{PhaseResults: []alignv1.PhaseResult{{Phase: 1}, {Phase: 2}}}
	pr := phaseResult(st, 2, false)
	foldResults(st, pr, "label", map[int32]alignv1.StageResult{
		0: {Pairs: 30, GuardDecided: n(3)},
		1: {Pairs: 10, GuardDecided: n(5)},
	})
	if pr.PairsKept != 40 || pr.GuardDecided != "0.2" {
		t.Errorf("label fold: %+v", pr)
	}
	foldResults(st, pr, "train", map[int32]alignv1.StageResult{
		0: {Loss: f(0.5), FreshPairAccuracy: f(0.625), FreshLengthBalanced: f(0.5625), PrevTrainPairAccuracy: f(0.75)},
		1: {Loss: f(0.7)},
	})
	if pr.FreshPairAccuracy != "0.625" || pr.FreshLengthBalanced != "0.5625" || pr.TrainPairAccuracy != "" || st.PhaseResults[0].TrainPairAccuracy != "0.75" {
		t.Errorf("train fold: %+v", st.PhaseResults)
	}
	// Phase 1 has no previous phase and no fresh pairs; label shards without the field leave it unset.
	p1 := phaseResult(st, 1, false)
	foldResults(st, p1, "label", map[int32]alignv1.StageResult{0: {Pairs: 5}})
	foldResults(st, p1, "train", map[int32]alignv1.StageResult{0: {Loss: f(0.5)}})
	if p1.FreshPairAccuracy != "" || p1.FreshLengthBalanced != "" || p1.GuardDecided != "" || p1.TrainPairAccuracy != "0.75" {
		t.Errorf("phase 1: %+v", p1)
	}
}

// TestJudgeTokensReachOnlyScoringPods: an OpenAIJudge labeler's token reaches the label and eval
// pods, the evaluator judge's token only the eval pods, and neither a built-in annotator's run.
func TestJudgeTokensReachOnlyScoringPods(t *testing.T) {
	t.Parallel()
	r := &AlignmentRunReconciler{StageImage: "img:default"}
	secret := func(name string) *corev1.SecretKeySelector {
		return &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: "token"}
	}
	judged := testutil.MakeRun("ns", "judged").Mutate(func(a *alignv1.AlignmentRun) {
		a.Spec.Labeler.Annotator = &alignv1.AnnotatorSpec{Kind: alignv1.AnnotatorOpenAIJudge, URL: "https://judge.example/v1", Model: "m", SecretRef: secret("gold")}
		a.Spec.Evaluator.Judge = &alignv1.AnnotatorSpec{Kind: alignv1.AnnotatorRewardModel, URL: "https://rm.example/pooling", Protocol: alignv1.RewardVLLMPooling, SecretRef: secret("judge")}
	}).Defaulted()
	builtin := testutil.MakeRun("ns", "builtin").Defaulted()
	for _, tc := range []struct {
		run   *alignv1.AlignmentRun
		stage string
		want  map[string]string // env var -> Secret name
	}{
		{judged, "sample", map[string]string{}},
		{judged, "label", map[string]string{contract.EnvAnnotatorToken: "gold"}},
		{judged, "train", map[string]string{}},
		{judged, "eval", map[string]string{contract.EnvAnnotatorToken: "gold", alignv1.EnvEvaluatorToken: "judge"}},
		{builtin, "label", map[string]string{}},
		{builtin, "eval", map[string]string{}},
	} {
		got := map[string]string{}
		for _, e := range r.buildJob(tc.run, 1, tc.stage, 0).Spec.Template.Spec.Containers[0].Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				got[e.Name] = e.ValueFrom.SecretKeyRef.Name
			}
		}
		if !maps.Equal(got, tc.want) {
			t.Errorf("%s %s: secret env %v, want %v", tc.run.Name, tc.stage, got, tc.want)
		}
	}
}

// TestBuildJobArgsAreTheContracts: without a command override, every stage pod runs
// `bpo <stage>` with exactly contract.PodInvocation's flags (which cmd/bpo's round-trip test
// parses with the stage commands' flags), then spec.<stage>.args; the mounts and the
// termination-message path are the contract's paths.
func TestBuildJobArgsAreTheContracts(t *testing.T) {
	t.Parallel()
	r := &AlignmentRunReconciler{StageImage: "img"}
	for _, run := range []*alignv1.AlignmentRun{
		testutil.MakeRun("ns", "plain").Defaulted(),
		testutil.MakeRun("ns", "cm").DataConfigMap("prompts").Mutate(func(a *alignv1.AlignmentRun) {
			a.Spec.Sampler.Parallelism, a.Spec.Labeler.Parallelism = ptr.To(int32(3)), ptr.To(int32(2))
			a.Spec.Ensemble.Members = 4
			a.Spec.Trainer.Args = []string{"--verbose"}
			a.Spec.Evaluator.Command, a.Spec.Evaluator.Args = []string{"python3", "eval.py"}, []string{"--model", "x"}
		}).Defaulted(),
	} {
		for _, stage := range contract.Stages {
			for _, k := range []int32{0, 2} {
				job := r.buildJob(run, k, stage, 0)
				c := job.Spec.Template.Spec.Containers[0]
				flags := contract.PodInvocation(&run.Spec, stage, k).Args()
				wantCmd, want := []string{"bpo"}, append([]string{stage}, flags...)
				switch {
				case stage == alignv1.StageTrain:
					want = append(want, run.Spec.Trainer.Args...)
				case (stage == alignv1.StageEval || stage == alignv1.StageReport) && run.Spec.Evaluator.Command != nil:
					// A custom command (spec.evaluator's runs eval and report): its args, then
					// the same contract flags.
					wantCmd, want = run.Spec.Evaluator.Command, append(slices.Clone(run.Spec.Evaluator.Args), flags...)
				}
				if !slices.Equal(c.Command, wantCmd) || !slices.Equal(c.Args, want) {
					t.Errorf("%s %s: %v %v, want %v %v", run.Name, stage, c.Command, c.Args, wantCmd, want)
				}
				if n := *job.Spec.Completions; n != contract.Completions(&run.Spec, stage) {
					t.Errorf("%s %s: %d completions", run.Name, stage, n)
				}
				mounts := map[string]bool{}
				for _, m := range c.VolumeMounts {
					mounts[m.MountPath] = true
				}
				if !mounts[contract.ConfigMountPath] || !mounts[contract.WorkspaceMountPath] || c.TerminationMessagePath != contract.TerminationLogPath {
					t.Errorf("%s %s: mounts %v, termination message at %s", run.Name, stage, c.VolumeMounts, c.TerminationMessagePath)
				}
			}
		}
	}
}
