package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/yaml"

	alignv1 "github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/controllers/testutil"
)

// fakeResult is the StageResult the fake stage pods report; the values are chosen so that the
// folded phase results are easy to predict (see TestRunSucceedsThroughAllStages).
func fakeResult(stage, phaseLabel string, i int32) alignv1.StageResult {
	k, _ := strconv.Atoi(phaseLabel)
	r := alignv1.StageResult{Stage: stage, Phase: int32(k), Index: i, DurationSeconds: 1.5}
	f := func(v float64) *float64 { return &v }
	switch stage {
	case alignv1.StageSample:
		r.Samples, r.Pairs, r.Identical = 20, 8+int64(i), 2
	case alignv1.StageLabel:
		r.Pairs, r.Ties = 7+int64(i), 1
	case alignv1.StageTrain:
		r.Loss, r.RewardAccuracy, r.RewardMargin = f(0.6+0.1*float64(i)), f(0.5+0.1*float64(i)), f(0.2)
		r.KLToReference, r.KLToInitial, r.Steps = f(0.01*float64(i+1)), f(0.1), 2
		r.Checkpoint = fmt.Sprintf("phase-%d/members/member-%d", k, i)
	case alignv1.StageEval:
		r.WinRate, r.GoldReward, r.KLToInitial = f(0.5+0.1*float64(k)), f(0.25), f(0.2)
		r.MeanLength, r.Distinct2 = f(21), f(0.8)
	case alignv1.StageReport:
		r.Report, r.Message = "flow/report.md", "win rate 0.5 -> 0.7"
	case alignv1.StageExport:
		r.Outputs = &alignv1.RunOutputs{Policy: "s3://models/out/flow/policy", Adapter: "s3://models/out/flow/adapter"}
	}
	return r
}

// stageSequence is the Job names a run creates when every stage succeeds first time (written
// out here, not derived from spec.Stages, so that the walk itself is under test).
func stageSequence(run string, phases int32, everyPhase, baseline bool) []string {
	var names []string
	if baseline {
		names = append(names, JobName(run, 0, "eval", 0))
	}
	for k := int32(1); k <= phases; k++ {
		for _, st := range []string{"sample", "label", "train", "eval", "report"} {
			if st == "eval" && !everyPhase && k < phases || st == "report" && (!baseline || k < phases) {
				continue
			}
			names = append(names, JobName(run, k, st, 0))
		}
	}
	return names
}

// TestRunSucceedsThroughAllStages drives runs through every stage of every phase, playing the
// stage pods, and checks the Jobs, the folded phase results, the conditions and the events.
func TestRunSucceedsThroughAllStages(t *testing.T) {
	requireEnv(t)
	t.Parallel()
	cases := []struct {
		name       string
		phases     int32
		everyPhase bool
		baseline   bool // the default walk: the phase-0 baseline eval first, the report last
	}{
		{"offline F=1", 1, false, false},
		{"bpo F=2, eval after the last phase", 2, false, false},
		{"bpo F=2, eval every phase", 2, true, false},
		{"bpo F=2, baseline and report (the defaults)", 2, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			ns := newNamespace(t, "flow")
			startManager(t, ns, func(r *AlignmentRunReconciler) { r.Policy.AllowedImages = []string{"example.com/"} })
			run := createRun(t, testutil.MakeRun(ns, "flow").Phases(tc.phases).Members(2).
				SamplerParallelism(2).EvalEveryPhase(tc.everyPhase).Baseline(tc.baseline).
				SamplerEnv("EXTRA", "1").TrainerImage("example.com/bpo-train:v1").
				TrainerResources(corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2")}).Obj())

			want := stageSequence(run.Name, tc.phases, tc.everyPhase, tc.baseline)
			for i, name := range want {
				job := waitJob(t, ns, name)
				// Jobs are created one at a time, in order.
				if got := jobNames(listJobs(t, ns, run.Name)); !slices.Equal(got, sortedCopy(want[:i+1])) {
					t.Fatalf("after %s: jobs %v, want %v", name, got, want[:i+1])
				}
				var r *alignv1.AlignmentRun
				eventually(t, waitTimeout, "status of "+name, func() string {
					r = getRun(t, ns, run.Name)
					c := meta.FindStatusCondition(r.Status.Conditions, alignv1.ConditionRunning)
					if c == nil || c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, name) || r.Status.State != alignv1.StateRunning ||
						r.Status.Stage != job.Labels[alignv1.LabelStage] || strconv.Itoa(int(r.Status.Phase)) != job.Labels[alignv1.LabelPhase] {
						return fmt.Sprintf("state %s stage %s phase %d Running %+v", r.Status.State, r.Status.Stage, r.Status.Phase, c)
					}
					return ""
				})
				checkJobSpec(t, r, job)
				succeed(t, ns, name)
			}

			r := waitCondition(t, ns, run.Name, alignv1.ConditionSucceeded, metav1.ConditionTrue, alignv1.ReasonSucceeded)
			for _, c := range []struct {
				t      string
				status metav1.ConditionStatus
			}{{alignv1.ConditionRunning, "False"}, {alignv1.ConditionSuspended, "False"}, {alignv1.ConditionFailed, "False"}} {
				cond := meta.FindStatusCondition(r.Status.Conditions, c.t)
				if cond == nil || cond.Status != c.status || cond.ObservedGeneration != r.Generation {
					t.Errorf("condition %s = %+v, want status %s at generation %d", c.t, cond, c.status, r.Generation)
				}
			}
			st := r.Status
			if st.ObservedGeneration != r.Generation || st.State != alignv1.StateSucceeded || st.Phase != tc.phases || st.Phases != tc.phases ||
				st.Progress != fmt.Sprintf("%d/%d", tc.phases, tc.phases) || st.Stage != map[bool]string{false: "eval", true: "report"}[tc.baseline] ||
				st.StartTime == nil || st.CompletionTime == nil || st.Retries != 0 || st.StageContract != "v1" {
				t.Errorf("status = %+v", st)
			}
			wantWin := formatMetric(0.5 + 0.1*float64(tc.phases))
			if st.LatestWinRate != wantWin || st.LatestCheckpoint != fmt.Sprintf("phase-%d/members/member-0", tc.phases) {
				t.Errorf("latestWinRate %q latestCheckpoint %q", st.LatestWinRate, st.LatestCheckpoint)
			}
			wantBaseline, wantReport := "", ""
			results := st.PhaseResults
			if tc.baseline {
				// Phase 0 is the initial model's evaluation: its win rate is the baseline, not the
				// latest; the report stage names report.md, and the success message says both.
				wantBaseline, wantReport = "0.5", "flow/report.md"
				if len(results) == 0 || results[0].Phase != 0 || !slices.Equal(results[0].CompletedStages, []string{"eval"}) ||
					results[0].WinRate != "0.5" || results[0].GoldReward != "0.25" || results[0].Loss != "" {
					t.Fatalf("phase 0 (baseline) result: %+v", results)
				}
				results = results[1:]
				if c := meta.FindStatusCondition(st.Conditions, alignv1.ConditionSucceeded); c == nil ||
					!strings.Contains(c.Message, "win rate 0.5 -> "+wantWin) || !strings.Contains(c.Message, "report flow/report.md") {
					t.Errorf("Succeeded message %+v", c)
				}
			}
			if st.BaselineWinRate != wantBaseline || st.Report != wantReport {
				t.Errorf("baselineWinRate %q report %q, want %q %q", st.BaselineWinRate, st.Report, wantBaseline, wantReport)
			}
			if len(results) != int(tc.phases) {
				t.Fatalf("phaseResults: %+v", st.PhaseResults)
			}
			for _, pr := range results {
				evaluated := tc.everyPhase || pr.Phase == tc.phases
				wantStages := []string{"sample", "label", "train"}
				klInitial, winRate := "0.1", ""
				if evaluated {
					wantStages = append(wantStages, "eval")
					klInitial, winRate = "0.2", formatMetric(0.5+0.1*float64(pr.Phase))
				}
				if tc.baseline && pr.Phase == tc.phases {
					wantStages = append(wantStages, "report")
				}
				// sample: 2 shards of (20 samples, 8+i pairs, 2 identical); label: 1 shard (7 kept,
				// 1 tie); train: mean over 2 members of loss 0.6/0.7, accuracy 0.5/0.6, KL 0.01/0.02.
				got := fmt.Sprintf("%v %d %d %d %d %d %s %s %s %s %s %s %s", pr.CompletedStages, pr.Samples, pr.PairsSampled,
					pr.Identical, pr.PairsKept, pr.Ties, pr.Loss, pr.RewardAccuracy, pr.RewardMargin, pr.KLToReference,
					pr.KLToInitial, pr.WinRate, pr.Checkpoint)
				wantStr := fmt.Sprintf("%v 40 17 4 7 1 0.65 0.55 0.2 0.015 %s %s phase-%d/members/member-0", wantStages, klInitial, winRate, pr.Phase)
				if got != wantStr {
					t.Errorf("phase %d results:\n got  %s\n want %s", pr.Phase, got, wantStr)
				}
				if evaluated && (pr.GoldReward != "0.25" || pr.MeanLength != "21" || pr.Distinct2 != "0.8") {
					t.Errorf("phase %d eval metrics %+v", pr.Phase, pr)
				}
				if pr.StartTime == nil || pr.CompletionTime == nil || pr.DurationSeconds < 0 {
					t.Errorf("phase %d times %+v", pr.Phase, pr)
				}
			}

			// Every stage transition is an event (emitted after the status write).
			waitEvents(t, ns, run.Name, "StageStarted", "StageSucceeded", "PhaseCompleted", "Succeeded")
			eventually(t, waitTimeout, "one StageStarted event per Job", func() string {
				reasons := eventReasons(t, ns, run.Name)
				if n, m := count(reasons, "StageStarted"), count(reasons, "StageSucceeded"); n != len(want) || m != len(want) {
					return fmt.Sprintf("%d StageStarted and %d StageSucceeded events for %d Jobs: %v", n, m, len(want), reasons)
				}
				return ""
			})
			// One PhaseCompleted per phase, with the phase's numbers (win rate when evaluated).
			var wantNotes, allNotes []string
			for _, pr := range st.PhaseResults {
				wantNotes = append(wantNotes, phaseSummary(&pr, tc.phases))
			}
			allNotes = slices.Clone(wantNotes)
			if tc.baseline {
				if wantNotes[0] != "baseline (the initial model) evaluated: win rate 0.5, gold reward 0.25, mean length 21" {
					t.Errorf("phase 0 summary %q", wantNotes[0])
				}
				wantNotes = wantNotes[1:]
			}
			if wantNotes[0] != fmt.Sprintf("phase 1/%d completed: 7 pairs kept, 1 ties, loss 0.65, reward accuracy 0.55, KL to reference 0.015, KL to initial %s%s",
				tc.phases, map[bool]string{true: "0.2", false: "0.1"}[tc.everyPhase || tc.phases == 1], map[bool]string{true: ", win rate 0.6", false: ""}[tc.everyPhase || tc.phases == 1]) {
				t.Errorf("phase 1 summary %q", wantNotes[0])
			}
			consistently(t, time.Second, "one PhaseCompleted event per phase", func() string {
				if got := eventNotes(t, ns, run.Name, "PhaseCompleted"); !slices.Equal(sortedCopy(got), sortedCopy(allNotes)) {
					return fmt.Sprintf("PhaseCompleted notes %q, want %q", got, allNotes)
				}
				return ""
			})

			// The spec ConfigMap: run.yaml with apiVersion, kind, metadata and the spec.
			cm := &corev1.ConfigMap{}
			must(t, k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: run.Name + "-spec"}, cm))
			var doc struct {
				APIVersion, Kind string
				Metadata         struct{ Name, Namespace, UID string }
				Spec             alignv1.AlignmentRunSpec
			}
			must(t, yaml.Unmarshal([]byte(cm.Data["run.yaml"]), &doc))
			if doc.APIVersion != "alignment.bpo.dev/v1alpha1" || doc.Kind != "AlignmentRun" || doc.Metadata.UID != string(r.UID) ||
				doc.Metadata.Namespace != ns || doc.Spec.TrustRegion.Phases != tc.phases || doc.Spec.Loss.Beta != "0.1" {
				t.Errorf("run.yaml = %s", cm.Data["run.yaml"])
			}

			// Owner references on every child (envtest has no garbage collector: check the refs).
			children := []client.Object{cm}
			for _, j := range listJobs(t, ns, run.Name) {
				children = append(children, &j)
			}
			for _, c := range children {
				checkOwner(t, c, r)
			}

			// Metrics: the runs gauge of this namespace, and the phase/stage series.
			if v := metricValue(t, "bpo_alignmentruns", map[string]string{"namespace": ns, "state": "Succeeded"}); v != 1 {
				t.Errorf("bpo_alignmentruns{state=Succeeded} = %v, want 1", v)
			}
			if v := metricValue(t, "bpo_alignmentruns", map[string]string{"namespace": ns, "state": "Running"}); v != 0 {
				t.Errorf("bpo_alignmentruns{state=Running} = %v, want 0", v)
			}
			// Per-run series, from the folded phase results: sums over phases, newest values.
			F := float64(tc.phases)
			wantSeries := map[string]float64{
				"bpo_alignmentrun_state{Succeeded}": 1, "bpo_alignmentrun_phase": F, "bpo_alignmentrun_phases": F,
				"bpo_alignmentrun_pairs_sampled_total": 17 * F, "bpo_alignmentrun_pairs_kept_total": 7 * F, "bpo_alignmentrun_ties_total": F,
				"bpo_alignmentrun_train_loss": 0.65, "bpo_alignmentrun_reward_accuracy": 0.55, "bpo_alignmentrun_kl_to_reference": 0.015,
				"bpo_alignmentrun_kl_to_initial": 0.2, "bpo_alignmentrun_win_rate": 0.5 + 0.1*F,
			}
			if tc.baseline {
				wantSeries["bpo_alignmentrun_baseline_win_rate"] = 0.5
			}
			if got := runSeries(t, ns, run.Name); !mapsEqual(got, wantSeries) {
				t.Errorf("per-run series:\n got  %v\n want %v", got, wantSeries)
			}
			checkGatheredFamiliesListed(t)
			if v := metricValue(t, "bpo_alignmentrun_phases_completed_total", map[string]string{"loss_type": "DPO", "reference": "Behavior"}); v < float64(tc.phases) {
				t.Errorf("phases completed = %v, want >= %d", v, tc.phases)
			}
			if v := metricValue(t, "bpo_alignmentrun_stage_duration_seconds", map[string]string{"stage": "eval"}); v < 1 {
				t.Errorf("eval stage duration observations = %v", v)
			}

			// kubectl get ar: the printer columns.
			cols, names := printerColumns(t, ns, run.Name)
			if cols["Stage"] != st.Stage || cols["Phase"] != r.Status.Progress || cols["WinRate"] != wantWin || cols["State"] != "Succeeded" ||
				cols["Baseline"] != wantBaseline || cols["Progress"] != "" {
				t.Errorf("printer columns %v", cols)
			}
			// kubectl get ar: NAME STATE PHASE STAGE PROGRESS BASELINE WINRATE AGE (-o wide adds the rest).
			if !slices.Equal(names[:8], []string{"Name", "State", "Phase", "Stage", "Progress", "Baseline", "WinRate", "Age"}) {
				t.Errorf("column order %v", names)
			}
		})
	}
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}

func count(s []string, v string) int {
	n := 0
	for _, x := range s {
		if x == v {
			n++
		}
	}
	return n
}

func checkOwner(t *testing.T, obj client.Object, run *alignv1.AlignmentRun) {
	t.Helper()
	refs := obj.GetOwnerReferences()
	if len(refs) != 1 {
		t.Errorf("%s: owner references %+v", obj.GetName(), refs)
		return
	}
	ref := refs[0]
	if ref.UID != run.UID || ref.Kind != "AlignmentRun" || ref.APIVersion != "alignment.bpo.dev/v1alpha1" ||
		!ptr.Deref(ref.Controller, false) || !ptr.Deref(ref.BlockOwnerDeletion, false) {
		t.Errorf("%s: owner reference %+v", obj.GetName(), ref)
	}
}

// checkJobSpec checks a stage Job against the stage contract of docs/design.md.
func checkJobSpec(t *testing.T, run *alignv1.AlignmentRun, job *batchv1.Job) {
	t.Helper()
	stage, phase := job.Labels[alignv1.LabelStage], job.Labels[alignv1.LabelPhase]
	if job.Labels[alignv1.LabelRun] != run.Name || job.Labels[alignv1.LabelAttempt] == "" || phase == "" {
		t.Errorf("%s labels %v", job.Name, job.Labels)
	}
	completions := map[string]int32{"sample": 2, "label": 1, "train": 2, "eval": 1, "report": 1}[stage]
	s := job.Spec
	if ptr.Deref(s.Completions, 0) != completions || ptr.Deref(s.Parallelism, 0) != completions ||
		ptr.Deref(s.CompletionMode, "") != batchv1.IndexedCompletion || ptr.Deref(s.BackoffLimit, -1) != 0 {
		t.Errorf("%s: completions %v parallelism %v mode %v backoffLimit %v", job.Name, *s.Completions, *s.Parallelism, *s.CompletionMode, *s.BackoffLimit)
	}
	for k, v := range job.Labels {
		if s.Template.Labels[k] != v {
			t.Errorf("%s: pod template label %s=%q, want %q", job.Name, k, s.Template.Labels[k], v)
		}
	}
	pod := s.Template.Spec
	if pod.RestartPolicy != corev1.RestartPolicyNever || len(pod.Containers) != 1 {
		t.Fatalf("%s: pod spec %+v", job.Name, pod)
	}
	c := pod.Containers[0]
	wantArgs := []string{stage, "--config", "/etc/bpo/run.yaml", "--workspace", "/workspace", "--phase", phase}
	if stage == "sample" || stage == "label" {
		wantArgs = append(wantArgs, "--shards", strconv.Itoa(int(completions)))
	}
	wantArgs = append(wantArgs, "--termination-log", "/dev/termination-log")
	if c.Name != "bpo" || !slices.Equal(c.Command, []string{"bpo"}) || !slices.Equal(c.Args, wantArgs) {
		t.Errorf("%s: container %s command %v args %v, want bpo %v", job.Name, c.Name, c.Command, c.Args, wantArgs)
	}
	wantImage := "example.com/bpo:test"
	if stage == "train" {
		wantImage = "example.com/bpo-train:v1"
		if c.Resources.Requests.Cpu().String() != "2" {
			t.Errorf("%s: resources %v", job.Name, c.Resources)
		}
	}
	if c.Image != wantImage || c.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("%s: image %s (%s), want %s", job.Name, c.Image, c.ImagePullPolicy, wantImage)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	if env["BPO_RUN_NAME"] != run.Name || env["BPO_RUN_UID"] != string(run.UID) || (stage == "sample") != (env["EXTRA"] == "1") {
		t.Errorf("%s: env %v", job.Name, c.Env)
	}
	if c.TerminationMessagePolicy != corev1.TerminationMessageFallbackToLogsOnError {
		t.Errorf("%s: terminationMessagePolicy %s", job.Name, c.TerminationMessagePolicy)
	}
	sc, psc := c.SecurityContext, pod.SecurityContext
	if sc == nil || psc == nil || !ptr.Deref(psc.RunAsNonRoot, false) || ptr.Deref(sc.AllowPrivilegeEscalation, true) ||
		!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
		psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: security contexts pod %+v container %+v", job.Name, psc, sc)
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m
	}
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		vols[v.Name] = v
	}
	ws, cfgm := mounts["/workspace"], mounts["/etc/bpo"]
	if ws.SubPath != "runs" || vols[ws.Name].PersistentVolumeClaim == nil || vols[ws.Name].PersistentVolumeClaim.ClaimName != "workspace" {
		t.Errorf("%s: workspace mount %+v volume %+v", job.Name, ws, vols[ws.Name])
	}
	if !cfgm.ReadOnly || vols[cfgm.Name].Projected == nil || vols[cfgm.Name].Projected.Sources[0].ConfigMap.Name != run.Name+"-spec" {
		t.Errorf("%s: config mount %+v volume %+v", job.Name, cfgm, vols[cfgm.Name])
	}
}

// printerColumns returns the `kubectl get` columns of a run (the server-side Table), and the
// column names in order.
func printerColumns(t *testing.T, ns, name string) (map[string]string, []string) {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cfg)
	must(t, err)
	raw, err := cs.CoreV1().RESTClient().Get().
		AbsPath("/apis/alignment.bpo.dev/v1alpha1/namespaces", ns, "alignmentruns", name).
		SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").
		DoRaw(context.Background())
	must(t, err)
	var table metav1.Table
	must(t, json.Unmarshal(raw, &table))
	if len(table.Rows) != 1 {
		t.Fatalf("table rows %+v", table.Rows)
	}
	cols := map[string]string{}
	var names []string
	for i, c := range table.ColumnDefinitions {
		names = append(names, c.Name)
		if v := table.Rows[0].Cells[i]; v != nil {
			cols[c.Name] = fmt.Sprint(v)
		}
	}
	return cols, names
}

// sampleRuns reads every AlignmentRun in config/samples (the quickstart, IPO, online-DPO and
// offline-DPO baselines), keyed by file name.
func sampleRuns(t *testing.T) map[string]*alignv1.AlignmentRun {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "config", "samples", "*.yaml"))
	must(t, err)
	runs := map[string]*alignv1.AlignmentRun{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		must(t, err)
		if !strings.Contains(string(b), "kind: AlignmentRun") {
			continue
		}
		run := &alignv1.AlignmentRun{}
		if err := yaml.UnmarshalStrict(b, run); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		runs[filepath.Base(f)] = run
	}
	if len(runs) < 4 {
		t.Fatalf("want at least 4 sample runs in config/samples, found %d", len(runs))
	}
	return runs
}

// TestStageRetry: a failed stage Job is replaced by attempt Jobs up to backoffLimit; past it the
// run fails with the stage's own message.
func TestStageRetry(t *testing.T) {
	requireEnv(t)
	t.Parallel()
	cases := []struct {
		name         string
		backoffLimit int32
		failures     int // failures of the label stage of phase 1
		wantFailed   bool
	}{
		{"retry then success", 2, 1, false},
		{"retries exhausted", 1, 2, true},
		{"no retries", 0, 1, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns := newNamespace(t, "retry")
			startManager(t, ns)
			run := createRun(t, testutil.MakeRun(ns, "retry").Phases(1).Members(1).BackoffLimit(tc.backoffLimit).Obj())
			succeed(t, ns, "retry-p1-sample")
			for a := int32(0); a < int32(tc.failures); a++ {
				job := waitJob(t, ns, JobName(run.Name, 1, "label", a))
				if job.Labels[alignv1.LabelAttempt] != strconv.Itoa(int(a)) {
					t.Errorf("%s attempt label %q", job.Name, job.Labels[alignv1.LabelAttempt])
				}
				must(t, testutil.FailJob(context.Background(), k8sClient, job, fmt.Sprintf("annotator unreachable (try %d)", a)))
			}
			if tc.wantFailed {
				r := waitCondition(t, ns, run.Name, alignv1.ConditionFailed, metav1.ConditionTrue, alignv1.ReasonStageFailed)
				c := meta.FindStatusCondition(r.Status.Conditions, alignv1.ConditionFailed)
				wantMsg := fmt.Sprintf("annotator unreachable (try %d)", tc.failures-1)
				if !strings.Contains(c.Message, wantMsg) || !strings.Contains(c.Message, "phase 1/1 stage label") {
					t.Errorf("Failed message %q, want the stage's message %q", c.Message, wantMsg)
				}
				if r.Status.CompletionTime == nil || meta.IsStatusConditionTrue(r.Status.Conditions, alignv1.ConditionRunning) ||
					r.Status.State != alignv1.StateFailed || r.Status.Stage != "label" || r.Status.Retries != tc.backoffLimit {
					t.Errorf("status %+v", r.Status)
				}
				waitEvents(t, ns, run.Name, alignv1.ReasonStageFailed)
				// No further attempt is created.
				consistently(t, time.Second, "no attempt past backoffLimit", func() string {
					if _, err := getJob(ns, JobName(run.Name, 1, "label", int32(tc.failures))); !apierrors.IsNotFound(err) {
						return fmt.Sprintf("attempt %d exists (%v)", tc.failures, err)
					}
					return ""
				})
				if tc.failures > 1 {
					waitEvents(t, ns, run.Name, "StageRetry")
				}
				return
			}
			next := JobName(run.Name, 1, "label", int32(tc.failures))
			waitJob(t, ns, next)
			eventually(t, waitTimeout, "status.retries", func() string {
				if r := getRun(t, ns, run.Name); r.Status.Retries != int32(tc.failures) || r.Status.Stage != "label" {
					return fmt.Sprintf("retries %d stage %s", r.Status.Retries, r.Status.Stage)
				}
				return ""
			})
			waitEvents(t, ns, run.Name, "StageRetry")
			if v := metricValue(t, "bpo_alignmentrun_stage_retries_total", map[string]string{"stage": "label"}); v < 1 {
				t.Errorf("label retries metric = %v", v)
			}
			succeed(t, ns, next)
			succeed(t, ns, "retry-p1-train")
			succeed(t, ns, "retry-p1-eval")
			r := waitCondition(t, ns, run.Name, alignv1.ConditionSucceeded, metav1.ConditionTrue, "")
			if r.Status.PhaseResults[0].PairsKept != 7 || r.Status.Retries != 0 {
				t.Errorf("status after retry %+v", r.Status)
			}
		})
	}
}

func getJob(ns, name string) (*batchv1.Job, error) {
	job := &batchv1.Job{}
	return job, k8sClient.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, job)
}

// TestSuspendResume: suspend deletes the running Job and sets Suspended; resume recreates the
// same stage (same attempt) and keeps completed stages.
func TestSuspendResume(t *testing.T) {
	requireEnv(t)
	t.Parallel()
	ctx := context.Background()
	ns := newNamespace(t, "suspend")
	startManager(t, ns)
	run := createRun(t, testutil.MakeRun(ns, "sus").Phases(2).Members(1).BackoffLimit(2).Obj())
	sample := succeed(t, ns, "sus-p1-sample")
	// A retry in flight: the suspended stage must come back under the same attempt.
	label0 := waitJob(t, ns, "sus-p1-label")
	must(t, testutil.FailJob(ctx, k8sClient, label0, "flaky"))
	label1 := waitJob(t, ns, "sus-p1-label-a1")

	setSuspend(t, ns, run.Name, true)
	r := waitCondition(t, ns, run.Name, alignv1.ConditionSuspended, metav1.ConditionTrue, alignv1.ReasonSuspended)
	if meta.IsStatusConditionTrue(r.Status.Conditions, alignv1.ConditionRunning) {
		t.Errorf("Running is True while suspended")
	}
	eventually(t, waitTimeout, "the running Job deleted", func() string {
		if _, err := getJob(ns, label1.Name); !apierrors.IsNotFound(err) {
			return fmt.Sprintf("%s still there (%v)", label1.Name, err)
		}
		return ""
	})
	// Finished Jobs stay; nothing new is created while suspended.
	consistently(t, 1500*time.Millisecond, "no Jobs created while suspended", func() string {
		if got := jobNames(listJobs(t, ns, run.Name)); !slices.Equal(got, []string{"sus-p1-label", "sus-p1-sample"}) {
			return fmt.Sprintf("jobs %v", got)
		}
		return ""
	})
	if cols, _ := printerColumns(t, ns, run.Name); cols["State"] != "Suspended" || getRun(t, ns, run.Name).Status.State != alignv1.StateSuspended {
		t.Errorf("printer columns while suspended %v", cols)
	}

	setSuspend(t, ns, run.Name, false)
	resumed := waitJob(t, ns, "sus-p1-label-a1")
	if resumed.UID == label1.UID {
		t.Errorf("the deleted Job came back with the same uid")
	}
	r = waitCondition(t, ns, run.Name, alignv1.ConditionSuspended, metav1.ConditionFalse, alignv1.ReasonResumed)
	if r.Status.Phase != 1 || r.Status.Stage != "label" || r.Status.Retries != 1 || r.Status.State != alignv1.StateRunning {
		t.Errorf("resumed at phase %d stage %s retries %d, state %s", r.Status.Phase, r.Status.Stage, r.Status.Retries, r.Status.State)
	}
	if got, _ := getJob(ns, "sus-p1-sample"); got.UID != sample.UID {
		t.Errorf("the completed sample Job was recreated")
	}
	if _, err := getJob(ns, "sus-p1-label-a2"); !apierrors.IsNotFound(err) {
		t.Errorf("resume counted as a retry: attempt 2 exists (%v)", err)
	}
	waitEvents(t, ns, run.Name, alignv1.ReasonSuspended, alignv1.ReasonResumed)
	consistently(t, 500*time.Millisecond, "one retry only", func() string {
		if n := count(eventReasons(t, ns, run.Name), "StageRetry"); n != 1 {
			return fmt.Sprintf("%d StageRetry events: the resume was counted as a retry", n)
		}
		return ""
	})
	succeed(t, ns, "sus-p1-label-a1")
	waitJob(t, ns, "sus-p1-train")
}

func setSuspend(t *testing.T, ns, name string, v bool) {
	t.Helper()
	run := getRun(t, ns, name)
	patch := client.MergeFrom(run.DeepCopy())
	run.Spec.Suspend = ptr.To(v)
	must(t, k8sClient.Patch(context.Background(), run, patch))
}

// TestCreatedSuspended: a run created suspended starts nothing, and has no startTime, until resumed.
func TestCreatedSuspended(t *testing.T) {
	requireEnv(t)
	t.Parallel()
	ns := newNamespace(t, "created-suspended")
	startManager(t, ns)
	run := createRun(t, testutil.MakeRun(ns, "later").Suspend(true).Obj())
	r := waitCondition(t, ns, run.Name, alignv1.ConditionSuspended, metav1.ConditionTrue, "")
	if r.Status.StartTime != nil || r.Status.StageContract != "" || len(listJobs(t, ns, run.Name)) != 0 {
		t.Errorf("suspended run started: %+v", r.Status)
	}
	setSuspend(t, ns, run.Name, false)
	waitJob(t, ns, "later-p1-sample")
	eventually(t, waitTimeout, "startTime after resume", func() string {
		if r := getRun(t, ns, run.Name); r.Status.StartTime == nil || r.Status.StageContract != "v1" {
			return fmt.Sprintf("startTime %v, stageContract %q", r.Status.StartTime, r.Status.StageContract)
		}
		return ""
	})
}

// TestDeletion: children carry controller owner references (the garbage collector, absent in
// envtest, deletes them), and no finalizer holds the run back.
func TestDeletion(t *testing.T) {
	requireEnv(t)
	t.Parallel()
	ctx := context.Background()
	ns := newNamespace(t, "delete")
	startManager(t, ns)
	run := createRun(t, testutil.MakeRun(ns, "gone").Obj())
	job := waitJob(t, ns, "gone-p1-sample")
	run = getRun(t, ns, run.Name)
	checkOwner(t, job, run)
	cm := &corev1.ConfigMap{}
	must(t, k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "gone-spec"}, cm))
	checkOwner(t, cm, run)
	if len(run.Finalizers) != 0 {
		t.Errorf("finalizers %v", run.Finalizers)
	}
	eventually(t, waitTimeout, "the run's series", func() string {
		if got := runSeries(t, ns, run.Name); got["bpo_alignmentrun_state{Running}"] != 1 || got["bpo_alignmentrun_phases"] != 2 {
			return fmt.Sprintf("series %v", got)
		}
		return ""
	})
	must(t, k8sClient.Delete(ctx, run))
	eventually(t, waitTimeout, "run deleted", func() string {
		if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(run), &alignv1.AlignmentRun{}); !apierrors.IsNotFound(err) {
			return fmt.Sprintf("still there: %v", err)
		}
		return ""
	})
	// No series is left behind for the deleted run (nor a count for its emptied namespace).
	eventually(t, waitTimeout, "the run's series deleted", func() string {
		if got := runSeries(t, ns, run.Name); len(got) > 0 {
			return fmt.Sprintf("series left: %v", got)
		}
		if v := metricValue(t, "bpo_alignmentruns", map[string]string{"namespace": ns}); v != -1 {
			return fmt.Sprintf("bpo_alignmentruns of the emptied namespace = %v", v)
		}
		return ""
	})
	// The controller does not recreate anything for a deleted run.
	consistently(t, time.Second, "no new Jobs", func() string {
		if got := jobNames(listJobs(t, ns, run.Name)); !slices.Equal(got, []string{"gone-p1-sample"}) {
			return fmt.Sprintf("jobs %v", got)
		}
		return ""
	})
}

// TestRestartedController: a new manager continues where the stopped one left off, folding a
// stage that completed while no controller ran, without recreating finished Jobs.
func TestRestartedController(t *testing.T) {
	requireEnv(t)
	t.Parallel()
	ns := newNamespace(t, "restart")
	first := startManager(t, ns)
	run := createRun(t, testutil.MakeRun(ns, "again").Phases(2).Members(1).Obj())
	succeed(t, ns, "again-p1-sample")
	waitJob(t, ns, "again-p1-label")
	first.stop()

	// The label stage finishes while no controller runs.
	succeed(t, ns, "again-p1-label")
	before := map[string]types.UID{}
	for _, j := range listJobs(t, ns, run.Name) {
		before[j.Name] = j.UID
	}

	startManager(t, ns)
	waitJob(t, ns, "again-p1-train")
	for name, uid := range before {
		if j, err := getJob(ns, name); err != nil || j.UID != uid {
			t.Errorf("%s was recreated or deleted (%v)", name, err)
		}
	}
	for _, name := range stageSequence(run.Name, 2, false, false)[2:] {
		succeed(t, ns, name)
	}
	r := waitCondition(t, ns, run.Name, alignv1.ConditionSucceeded, metav1.ConditionTrue, "")
	if got := jobNames(listJobs(t, ns, run.Name)); !slices.Equal(got, sortedCopy(stageSequence(run.Name, 2, false, false))) {
		t.Errorf("jobs %v: some stage ran twice", got)
	}
	if pr := r.Status.PhaseResults[0]; pr.PairsKept != 7 || pr.PairsSampled != 8 {
		t.Errorf("phase 1 results %+v", pr)
	}
}

// TestTTLAfterFinished: ttlSecondsAfterFinished deletes the Jobs and the spec ConfigMap and
// keeps the run with its status.
func TestTTLAfterFinished(t *testing.T) {
	requireEnv(t)
	t.Parallel()
	ctx := context.Background()
	ns := newNamespace(t, "ttl")
	startManager(t, ns)
	run := createRun(t, testutil.MakeRun(ns, "brief").Phases(1).Members(1).TTLSecondsAfterFinished(1).Obj())
	for _, name := range stageSequence(run.Name, 1, false, false) {
		succeed(t, ns, name)
	}
	waitCondition(t, ns, run.Name, alignv1.ConditionSucceeded, metav1.ConditionTrue, "")
	eventually(t, waitTimeout, "children deleted", func() string {
		jobs := listJobs(t, ns, run.Name)
		err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "brief-spec"}, &corev1.ConfigMap{})
		if len(jobs) > 0 || !apierrors.IsNotFound(err) {
			return fmt.Sprintf("jobs %v, ConfigMap: %v", jobNames(jobs), err)
		}
		return ""
	})
	r := getRun(t, ns, run.Name)
	if !meta.IsStatusConditionTrue(r.Status.Conditions, alignv1.ConditionSucceeded) || len(r.Status.PhaseResults) != 1 ||
		r.Status.LatestWinRate == "" {
		t.Errorf("the run lost its status: %+v", r.Status)
	}
	waitEvents(t, ns, run.Name, "ChildrenDeleted")
	// Nothing is recreated after the cleanup.
	consistently(t, time.Second, "no children recreated", func() string {
		if jobs := listJobs(t, ns, run.Name); len(jobs) > 0 {
			return fmt.Sprintf("jobs %v", jobNames(jobs))
		}
		return ""
	})
}

// TestActiveDeadline: past activeDeadlineSeconds the run fails with DeadlineExceeded and the
// running Job is deleted; the deadline counts from the last resume.
func TestActiveDeadline(t *testing.T) {
	requireEnv(t)
	t.Parallel()
	t.Run("exceeded", func(t *testing.T) {
		t.Parallel()
		ns := newNamespace(t, "deadline")
		startManager(t, ns)
		run := createRun(t, testutil.MakeRun(ns, "slow").ActiveDeadlineSeconds(2).Obj())
		job := waitJob(t, ns, "slow-p1-sample")
		r := waitCondition(t, ns, run.Name, alignv1.ConditionFailed, metav1.ConditionTrue, alignv1.ReasonDeadlineExceeded)
		if elapsed := r.Status.CompletionTime.Sub(r.Status.StartTime.Time); elapsed < 2*time.Second {
			t.Errorf("failed after %s, before the 2 s deadline", elapsed)
		}
		if c := meta.FindStatusCondition(r.Status.Conditions, alignv1.ConditionFailed); !strings.Contains(c.Message, "activeDeadlineSeconds") {
			t.Errorf("message %q", c.Message)
		}
		if meta.IsStatusConditionTrue(r.Status.Conditions, alignv1.ConditionRunning) || r.Status.State != alignv1.StateFailed {
			t.Errorf("Running still True, or state %s", r.Status.State)
		}
		eventually(t, waitTimeout, "running Job deleted", func() string {
			if _, err := getJob(ns, job.Name); !apierrors.IsNotFound(err) {
				return fmt.Sprintf("%v", err)
			}
			return ""
		})
		waitEvents(t, ns, run.Name, alignv1.ReasonDeadlineExceeded)
	})
	t.Run("reset on resume", func(t *testing.T) {
		t.Parallel()
		ns := newNamespace(t, "deadline-resume")
		startManager(t, ns)
		run := createRun(t, testutil.MakeRun(ns, "paused").ActiveDeadlineSeconds(3).Obj())
		waitJob(t, ns, "paused-p1-sample")
		setSuspend(t, ns, run.Name, true)
		waitCondition(t, ns, run.Name, alignv1.ConditionSuspended, metav1.ConditionTrue, "")
		time.Sleep(3 * time.Second) // longer than the deadline, but suspended
		setSuspend(t, ns, run.Name, false)
		r := waitCondition(t, ns, run.Name, alignv1.ConditionSuspended, metav1.ConditionFalse, alignv1.ReasonResumed)
		resumedAt := meta.FindStatusCondition(r.Status.Conditions, alignv1.ConditionSuspended).LastTransitionTime
		consistently(t, time.Second, "not failed right after the resume", func() string {
			if r := getRun(t, ns, run.Name); meta.IsStatusConditionTrue(r.Status.Conditions, alignv1.ConditionFailed) {
				return "failed: the deadline was not reset on resume"
			}
			return ""
		})
		r = waitCondition(t, ns, run.Name, alignv1.ConditionFailed, metav1.ConditionTrue, alignv1.ReasonDeadlineExceeded)
		if d := r.Status.CompletionTime.Sub(resumedAt.Time); d < 3*time.Second {
			t.Errorf("failed %s after the resume, want >= 3s", d)
		}
	})
}

// TestInvalidSpecsRejected: admission (OpenAPI + CEL) rejects each invalid spec with a message
// naming the field.
func TestInvalidSpecsRejected(t *testing.T) {
	requireEnv(t)
	t.Parallel()
	ns := newNamespace(t, "invalid")
	if len(testutil.InvalidCases) < 10 {
		t.Fatalf("only %d invalid cases", len(testutil.InvalidCases))
	}
	for i, tc := range testutil.InvalidCases {
		t.Run(tc.Name, func(t *testing.T) {
			run := testutil.MakeRun(ns, fmt.Sprintf("bad-%d", i)).Obj()
			tc.Mutate(run)
			err := k8sClient.Create(context.Background(), run)
			if err == nil {
				t.Fatalf("accepted")
			}
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.APIMessage) {
				t.Errorf("error %q\n does not contain %q", err, tc.APIMessage)
			}
		})
	}
	// The length term is accepted wherever the log-probs are sums.
	for i, l := range []alignv1.LossSpec{
		{Type: alignv1.LossDPO, LengthAlpha: "0.2"},
		{Type: alignv1.LossIPO, LengthAlpha: "0.2", IPOLengthNormalize: ptr.To(false)},
		{Type: alignv1.LossIPO, LengthAlpha: "0"},
		{Type: alignv1.LossSLiC, LengthAlpha: "1e-2"},
	} {
		t.Run(fmt.Sprintf("lengthAlpha %s %s is valid", l.Type, l.LengthAlpha), func(t *testing.T) {
			run := testutil.MakeRun(ns, fmt.Sprintf("len-%d", i)).Obj()
			run.Spec.Loss = l
			must(t, k8sClient.Create(context.Background(), run, client.DryRunAll))
			run.SetDefaults()
			if errs := run.ValidateLocal(); len(errs) > 0 {
				t.Errorf("Validate: %v", errs.ToAggregate())
			}
		})
	}
	for file, run := range sampleRuns(t) {
		t.Run("sample "+file+" is valid", func(t *testing.T) {
			run.Namespace = ns
			must(t, k8sClient.Create(context.Background(), run, client.DryRunAll))
		})
	}
}

// TestRecipeImmutable: recipe fields cannot change after creation; lifecycle and scheduling
// fields can.
func TestRecipeImmutable(t *testing.T) {
	requireEnv(t)
	t.Parallel()
	ctx := context.Background()
	ns := newNamespace(t, "immutable")
	run := createRun(t, testutil.MakeRun(ns, "fixed").Obj())
	for _, tc := range testutil.ImmutableCases {
		t.Run(tc.Name, func(t *testing.T) {
			r := getRun(t, ns, run.Name)
			tc.Mutate(r)
			err := k8sClient.Update(ctx, r)
			if err == nil || !strings.Contains(err.Error(), tc.APIMessage) || !strings.Contains(err.Error(), "create a new AlignmentRun") {
				t.Errorf("update: %v\n want an error containing %q", err, tc.APIMessage)
			}
		})
	}
	for name, mutate := range testutil.MutableCases {
		t.Run("mutable "+name, func(t *testing.T) {
			r := getRun(t, ns, run.Name)
			mutate(r)
			must(t, k8sClient.Update(ctx, r))
		})
	}
}

// TestSchemaDefaultsMatchGo: the API server's defaults equal SetDefaults (used by the local runner).
func TestSchemaDefaultsMatchGo(t *testing.T) {
	requireEnv(t)
	t.Parallel()
	ns := newNamespace(t, "defaults")
	w := testutil.MakeRun(ns, "minimal").Mutate(func(r *alignv1.AlignmentRun) {
		r.Spec.TrustRegion = alignv1.TrustRegionSpec{}
		r.Spec.Budget.PairsPerStep = 0
		r.Spec.Ensemble = alignv1.EnsembleSpec{}
	})
	stored := createRun(t, w.Obj())
	want := w.Defaulted()
	if d := diffJSON(t, want.Spec, stored.Spec); d != "" {
		t.Errorf("schema defaults differ from SetDefaults:\n%s", d)
	}
}

func diffJSON(t *testing.T, a, b any) string {
	t.Helper()
	ya, err := yaml.Marshal(a)
	must(t, err)
	yb, err := yaml.Marshal(b)
	must(t, err)
	if string(ya) == string(yb) {
		return ""
	}
	return fmt.Sprintf("Go:\n%s\nAPI server:\n%s", ya, yb)
}

// metricValue reads a gauge or counter (or a histogram's sample count) from controller-runtime's
// registry, for the series with the given labels.
func metricValue(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := ctrlmetrics.Registry.Gather()
	must(t, err)
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue next
				}
			}
			switch {
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return -1
}
