package controllers

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"unicode/utf8"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	alignv1 "github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/stage/contract"
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

// completionIndex is the pod's Indexed-Job completion index (its annotation), or fallback when
// the pod has none.
func completionIndex(pod *corev1.Pod, fallback int32) int32 {
	if v, ok := pod.Annotations[batchv1.JobCompletionIndexAnnotation]; ok {
		if i, err := strconv.Atoi(v); err == nil {
			return int32(i)
		}
	}
	return fallback
}

// stageResults reads one StageResult per completion index from the termination messages of the
// Job's succeeded pods. bad counts succeeded pods whose message is not a StageResult, or one that
// status could not hold (contract.ReadResult).
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
		res, err := contract.ReadResult(term.Message)
		if err != nil {
			bad++
			continue
		}
		results[completionIndex(pod, res.Index)] = res
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
		msg := contract.FailureText(term.Message)
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

// foldResults folds a stage's StageResults (contract.Fold) into the phase's result
// (docs/design.md): sample's samples, candidate pairs and identical prompts; label's pairs kept,
// ties, a remote annotator's accounting and the guard-decided share of the pairs kept; train's
// member means, member 0's checkpoint, and member 0's prevTrainPairAccuracy on the previous
// phase; eval's metrics; report's path; export's URIs. A metric no pod reported leaves the field as it was.
func foldResults(st *alignv1.AlignmentRunStatus, pr *alignv1.PhaseResult, stage string, byIndex map[int32]alignv1.StageResult) {
	f := contract.Fold(stage, byIndex)
	set := func(dst *string, v *float64) {
		if v != nil {
			*dst = formatMetric(*v)
		}
	}
	switch stage {
	case alignv1.StageSample:
		pr.Samples, pr.PairsSampled, pr.Identical = f.Samples, f.Pairs, f.Identical
	case alignv1.StageLabel:
		pr.PairsKept, pr.Ties, pr.Annotation = f.Pairs, f.Ties, f.Annotation
		set(&pr.GuardDecided, f.GuardDecidedShare)
	case alignv1.StageTrain:
		set(&pr.Loss, f.Loss)
		set(&pr.RewardAccuracy, f.RewardAccuracy)
		set(&pr.RewardMargin, f.RewardMargin)
		set(&pr.KLToReference, f.KLToReference)
		set(&pr.KLToInitial, f.KLToInitial)
		set(&pr.FreshPairAccuracy, f.FreshPairAccuracy)
		set(&pr.FreshLengthBalanced, f.FreshLengthBalanced)
		// Member 0 also measures the previous phase's train-pair accuracy (that phase may have had
		// no eval stage to report it); it belongs to the previous phase's entry.
		if prev := phaseResult(st, pr.Phase-1, false); prev != nil {
			set(&prev.TrainPairAccuracy, f.PrevTrainPairAccuracy)
		}
		if f.Checkpoint != "" {
			pr.Checkpoint = f.Checkpoint
			st.LatestCheckpoint = f.Checkpoint
		}
	case alignv1.StageEval:
		set(&pr.WinRate, f.WinRate)
		if f.WinRate != nil {
			if pr.Phase == 0 {
				st.BaselineWinRate = pr.WinRate // the initial model: not the latest policy
			} else {
				st.LatestWinRate = pr.WinRate
			}
		}
		set(&pr.GoldReward, f.GoldReward)
		set(&pr.KLToInitial, f.KLToInitial)
		set(&pr.MeanLength, f.MeanLength)
		set(&pr.Distinct2, f.Distinct2)
		set(&pr.Fluency, f.Fluency)
		set(&pr.TrainPairAccuracy, f.TrainPairAccuracy)
		set(&pr.JudgeWinRate, f.JudgeWinRate)
	case alignv1.StageReport:
		if f.Report != "" {
			st.Report = f.Report
		}
	case alignv1.StageExport:
		if f.Outputs != nil {
			st.Outputs = f.Outputs.DeepCopy() // the newest export: the final one once the run succeeded
		}
	}
}
