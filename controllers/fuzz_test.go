package controllers

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	alignv1 "github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/stage/contract"
)

// fzPod is a pod of a stage Job that ended in phase with the container's termination
// message msg.
func fzPod(phase corev1.PodPhase, exit int32, msg string) corev1.Pod {
	return corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "stage-0"},
		Status: corev1.PodStatus{Phase: phase, ContainerStatuses: []corev1.ContainerStatus{{Name: containerName,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: exit, Reason: "Error", Message: msg}},
		}}},
	}
}

// FuzzStageResult: the controller's reading of a stage pod's termination message (the
// StageResult JSON, written by a process the controller does not control).
//   - A succeeded pod's message is either one StageResult or counted bad, never both;
//     it is accepted only when it is a JSON object status can hold, the result is what
//     the message says, and it survives the JSON round trip of a status write.
//   - A failed pod's message becomes a "pod <name>: ..." line of at most 512 bytes of
//     message (plus "..."), never empty, valid UTF-8 when the message is (a message cut
//     inside a character would not survive the API server's JSON unchanged).
func FuzzStageResult(f *testing.F) {
	loss, acc := 0.6931, 0.5
	for _, r := range []alignv1.StageResult{
		{Stage: "sample", Phase: 1, Index: 1, Samples: 64, Pairs: 64, Identical: 2, DurationSeconds: 12.5, Checkpoint: "run/phase-1/samples"},
		{Stage: "train", Phase: 2, Index: 0, Loss: &loss, RewardAccuracy: &acc, Steps: 16, Checkpoint: "run/phase-2/members/member-0"},
		{Stage: "eval", Phase: 1, Message: "the eval stage failed: " + strings.Repeat("é", 300)},
	} {
		b, err := json.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(b))
	}
	for _, s := range []string{
		``, `null`, `[]`, ` {"stage": "label", "index": 3, "pairs": -1} `, `{"index": 2, "loss": null, "winRate": 1e308}`,
		`{"stage": "train"} trailing`, `{"checkpoint": "` + strings.Repeat("a", 1100) + `"}`,
		"Traceback (most recent call last):\n  panic: runtime error \xff\xfe",
		strings.Repeat("日本語", 200),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, msg string) {
		results, bad := stageResults([]corev1.Pod{fzPod(corev1.PodSucceeded, 0, msg)})
		if len(results)+bad != 1 {
			t.Fatalf("%d results and %d bad from one pod", len(results), bad)
		}
		if len(results) == 1 {
			trimmed := strings.TrimSpace(msg)
			if !json.Valid([]byte(trimmed)) || trimmed[0] != '{' {
				t.Fatalf("accepted %q, which is not one JSON object", msg)
			}
			var want alignv1.StageResult
			if err := json.Unmarshal([]byte(trimmed), &want); err != nil {
				t.Fatal(err)
			}
			got, ok := results[want.Index]
			if !ok || !reflect.DeepEqual(got, want) {
				t.Fatalf("results %+v, want %+v at index %d", results, want, want.Index)
			}
			if err := contract.CheckResult(&got); err != nil {
				t.Fatalf("accepted a result status cannot hold: %v", err)
			}
			b, err := json.Marshal(got)
			if err != nil {
				t.Fatalf("marshalling %+v: %v", got, err)
			}
			var back alignv1.StageResult
			if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, got) {
				t.Fatalf("round trip of %+v: %+v, %v", got, back, err)
			}
		}

		job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "stage"}}
		line, _ := failureMessage(job, []corev1.Pod{fzPod(corev1.PodFailed, 1, msg)})
		const prefix = "pod stage-0: "
		if !strings.HasPrefix(line, prefix) || len(line) == len(prefix) {
			t.Fatalf("failure message %q", line)
		}
		if n := len(line) - len(prefix); n > 512+len("...") {
			t.Fatalf("failure message of %d bytes", n)
		}
		if utf8.ValidString(msg) && !utf8.ValidString(line) {
			t.Fatalf("failure message %q of a valid UTF-8 message is not valid UTF-8", line)
		}
	})
}

// TestTerminationMessageRegressions pins FuzzStageResult's two findings: a "null"
// message counted as an all-zero StageResult, and a failure message cut inside a
// UTF-8 character.
func TestTerminationMessageRegressions(t *testing.T) {
	if results, bad := stageResults([]corev1.Pod{fzPod(corev1.PodSucceeded, 0, " null\n")}); len(results) != 0 || bad != 1 {
		t.Errorf(`"null": %d results, %d bad; want 0 and 1`, len(results), bad)
	}
	msg := strings.Repeat("a", 511) + "é and more"
	if got := truncate(msg, 512); got != strings.Repeat("a", 511)+"..." {
		t.Errorf("truncate cut inside a character: %q", got[500:])
	}
	if got := truncate(strings.Repeat("é", 300), 512); got != strings.Repeat("é", 256)+"..." {
		t.Errorf("truncate at a character boundary: %q", got[500:])
	}
}
