package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	alignv1 "github.com/bpo-dev/bpo/api/v1alpha1"
)

// Job state, read from the terminal conditions the Job controller sets.
func jobCondition(job *batchv1.Job, t batchv1.JobConditionType) *batchv1.JobCondition {
	for i := range job.Status.Conditions {
		if c := &job.Status.Conditions[i]; c.Type == t && c.Status == corev1.ConditionTrue {
			return c
		}
	}
	return nil
}

func jobComplete(job *batchv1.Job) bool { return jobCondition(job, batchv1.JobComplete) != nil }
func jobFailed(job *batchv1.Job) bool   { return jobCondition(job, batchv1.JobFailed) != nil }
func jobFinished(job *batchv1.Job) bool { return jobComplete(job) || jobFailed(job) }

// jobPods lists the pods of a Job by the Job's own selector (batch.kubernetes.io/controller-uid),
// so that pods of an earlier Job with the same name are never mixed in.
func (r *AlignmentRunReconciler) jobPods(ctx context.Context, job *batchv1.Job) ([]corev1.Pod, error) {
	if job.Spec.Selector == nil {
		return nil, nil
	}
	sel, err := metav1.LabelSelectorAsSelector(job.Spec.Selector)
	if err != nil {
		return nil, err
	}
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.InNamespace(job.Namespace), client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return nil, err
	}
	return pods.Items, nil
}

func terminatedState(pod *corev1.Pod) *corev1.ContainerStateTerminated {
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name == containerName && cs.State.Terminated != nil {
			return cs.State.Terminated
		}
	}
	return nil
}

func podIndex(pod *corev1.Pod, res *alignv1.StageResult) int32 {
	if v, ok := pod.Annotations[batchv1.JobCompletionIndexAnnotation]; ok {
		if i, err := strconv.Atoi(v); err == nil {
			return int32(i)
		}
	}
	return res.Index
}

// stageResults reads one StageResult per completion index from the termination messages of the
// Job's succeeded pods. bad counts succeeded pods whose message is not a StageResult, or one that
// could not be written into status (validResult).
func stageResults(pods []corev1.Pod) (results map[int32]alignv1.StageResult, bad int) {
	results = map[int32]alignv1.StageResult{}
	for i := range pods {
		pod := &pods[i]
		if pod.Status.Phase != corev1.PodSucceeded {
			continue
		}
		term := terminatedState(pod)
		if term == nil || term.ExitCode != 0 {
			continue
		}
		// Only a JSON object is a StageResult: "null" would unmarshal to an all-zero result.
		msg := strings.TrimSpace(term.Message)
		var res alignv1.StageResult
		if !strings.HasPrefix(msg, "{") || json.Unmarshal([]byte(msg), &res) != nil || validResult(&res) != nil {
			bad++
			continue
		}
		results[podIndex(pod, &res)] = res
	}
	return results, bad
}

// failureMessage is the stage's own error: the StageResult message (or the raw log tail, with
// FallbackToLogsOnError) of a failed pod, else the Job's Failed condition. fromPod reports the
// former: the cache may show the Job's failure before its pod's terminated state.
func failureMessage(job *batchv1.Job, pods []corev1.Pod) (msg string, fromPod bool) {
	if msg, ok := deadlineMessage(job); ok {
		return msg, true // final: the stopped pods have nothing of their own to say
	}
	sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })
	for i := range pods {
		pod := &pods[i]
		term := terminatedState(pod)
		if pod.Status.Phase != corev1.PodFailed || term == nil {
			continue
		}
		msg := strings.TrimSpace(term.Message)
		var res alignv1.StageResult
		if json.Unmarshal([]byte(msg), &res) == nil && res.Message != "" {
			msg = res.Message
		}
		if msg == "" {
			msg = fmt.Sprintf("exit code %d (%s)", term.ExitCode, term.Reason)
		}
		return fmt.Sprintf("pod %s: %s", pod.Name, truncate(msg, 512)), true
	}
	if c := jobCondition(job, batchv1.JobFailed); c != nil {
		return fmt.Sprintf("job %s: %s: %s", job.Name, c.Reason, c.Message), false
	}
	return fmt.Sprintf("job %s failed", job.Name), false
}

// maxCheckpointBytes is the MaxLength of status.latestCheckpoint, phaseResults[].checkpoint and
// status.report.
const maxCheckpointBytes = 1024

// validResult reports a StageResult that status could not hold: folded as it is, it would make
// every status write fail with 422 (a field over its schema bound) while the run moved on.
func validResult(r *alignv1.StageResult) error {
	switch {
	case len(r.Checkpoint) > maxCheckpointBytes:
		return fmt.Errorf("checkpoint is %d bytes, over %d", len(r.Checkpoint), maxCheckpointBytes)
	case len(r.Report) > maxCheckpointBytes:
		return fmt.Errorf("report is %d bytes, over %d", len(r.Report), maxCheckpointBytes)
	case r.Samples < 0 || r.Pairs < 0 || r.Identical < 0 || r.Ties < 0 || r.Steps < 0:
		return fmt.Errorf("negative count in %+v", *r)
	}
	return nil
}

// truncate shortens s to at most n bytes plus "...", never inside a UTF-8 character (a
// message cut there would not survive the API server's JSON unchanged).
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Back up over at most 3 continuation bytes to the start of the character at s[n].
	for i := 0; i < utf8.UTFMax-1 && n > 0 && !utf8.RuneStart(s[n]); i++ {
		n--
	}
	return s[:n] + "..."
}

// formatMetric renders a real-valued metric for status (strings, %.4g).
func formatMetric(v float64) string { return strconv.FormatFloat(v, 'g', 4, 64) }

// meanOf returns the mean of the non-nil values picked from the results, and whether any was set.
func meanOf(results []alignv1.StageResult, pick func(*alignv1.StageResult) *float64) (string, bool) {
	var sum float64
	n := 0
	for i := range results {
		if v := pick(&results[i]); v != nil {
			sum += *v
			n++
		}
	}
	if n == 0 {
		return "", false
	}
	return formatMetric(sum / float64(n)), true
}

// foldResults folds a stage's StageResults into the phase's result (docs/design.md):
// sample sums samples/pairs/identical; label sums pairs kept, ties, a remote annotator's
// accounting and guard-decided pairs (shown as a fraction of the pairs kept); train averages its diagnostics over members,
// takes member 0's checkpoint and puts member 0's prevTrainPairAccuracy on the previous phase;
// eval copies its metrics.
func foldResults(st *alignv1.AlignmentRunStatus, pr *alignv1.PhaseResult, stage string, byIndex map[int32]alignv1.StageResult) {
	idx := make([]int32, 0, len(byIndex))
	for i := range byIndex {
		idx = append(idx, i)
	}
	sort.Slice(idx, func(a, b int) bool { return idx[a] < idx[b] })
	results := make([]alignv1.StageResult, 0, len(idx))
	for _, i := range idx {
		results = append(results, byIndex[i])
	}

	setIf := func(dst *string, v string, ok bool) {
		if ok {
			*dst = v
		}
	}
	switch stage {
	case alignv1.StageSample:
		pr.Samples, pr.PairsSampled, pr.Identical = 0, 0, 0
		for _, r := range results {
			pr.Samples += r.Samples
			pr.PairsSampled += r.Pairs
			pr.Identical += r.Identical
		}
	case alignv1.StageLabel:
		pr.PairsKept, pr.Ties, pr.Annotation = 0, 0, nil
		var decided, measured int64 // guard-decided pairs, and the pairs of the shards that count them
		for _, r := range results {
			pr.PairsKept += r.Pairs
			pr.Ties += r.Ties
			if r.Annotation != nil {
				if pr.Annotation == nil {
					pr.Annotation = &alignv1.AnnotationAccounting{}
				}
				pr.Annotation.Add(*r.Annotation)
			}
			if r.GuardDecided != nil {
				decided += *r.GuardDecided
				measured += r.Pairs
			}
		}
		if measured > 0 {
			pr.GuardDecided = formatMetric(float64(decided) / float64(measured))
		}
	case alignv1.StageTrain:
		setIf(meanOfInto(&pr.Loss, results, func(r *alignv1.StageResult) *float64 { return r.Loss }))
		setIf(meanOfInto(&pr.RewardAccuracy, results, func(r *alignv1.StageResult) *float64 { return r.RewardAccuracy }))
		setIf(meanOfInto(&pr.RewardMargin, results, func(r *alignv1.StageResult) *float64 { return r.RewardMargin }))
		setIf(meanOfInto(&pr.KLToReference, results, func(r *alignv1.StageResult) *float64 { return r.KLToReference }))
		setIf(meanOfInto(&pr.KLToInitial, results, func(r *alignv1.StageResult) *float64 { return r.KLToInitial }))
		setIf(meanOfInto(&pr.FreshPairAccuracy, results, func(r *alignv1.StageResult) *float64 { return r.FreshPairAccuracy }))
		// Member 0 also measures the previous phase's train-pair accuracy (that phase may have had
		// no eval stage to report it); it belongs to the previous phase's entry.
		if prev := phaseResult(st, pr.Phase-1, false); prev != nil {
			setIf(meanOfInto(&prev.TrainPairAccuracy, results, func(r *alignv1.StageResult) *float64 { return r.PrevTrainPairAccuracy }))
		}
		if r, ok := byIndex[0]; ok && r.Checkpoint != "" {
			pr.Checkpoint = r.Checkpoint
			st.LatestCheckpoint = r.Checkpoint
		}
	case alignv1.StageEval:
		for _, r := range results {
			if r.WinRate != nil {
				pr.WinRate = formatMetric(*r.WinRate)
				if pr.Phase == 0 {
					st.BaselineWinRate = pr.WinRate // the initial model: not the latest policy
				} else {
					st.LatestWinRate = pr.WinRate
				}
			}
			if r.GoldReward != nil {
				pr.GoldReward = formatMetric(*r.GoldReward)
			}
			if r.KLToInitial != nil {
				pr.KLToInitial = formatMetric(*r.KLToInitial)
			}
			if r.MeanLength != nil {
				pr.MeanLength = formatMetric(*r.MeanLength)
			}
			if r.Distinct2 != nil {
				pr.Distinct2 = formatMetric(*r.Distinct2)
			}
			if r.Fluency != nil {
				pr.Fluency = formatMetric(*r.Fluency)
			}
			if r.TrainPairAccuracy != nil {
				pr.TrainPairAccuracy = formatMetric(*r.TrainPairAccuracy)
			}
			if r.JudgeWinRate != nil {
				pr.JudgeWinRate = formatMetric(*r.JudgeWinRate)
			}
		}
	case alignv1.StageReport:
		for _, r := range results {
			if r.Report != "" {
				st.Report = r.Report
			}
		}
	}
}

func meanOfInto(dst *string, results []alignv1.StageResult, pick func(*alignv1.StageResult) *float64) (*string, string, bool) {
	v, ok := meanOf(results, pick)
	return dst, v, ok
}
