//go:build e2e

package e2e

import (
	"context"
	"sync"
	"testing"
	"time"

	alignv1 "github.com/bpo-dev/bpo/api/v1alpha1"
)

// progressWatch records every distinct status.stageProgress a run shows while it runs (polled
// from the API server, as kubectl get would see it).
type progressWatch struct {
	mu   sync.Mutex
	seen []alignv1.StageProgress
	// getAr is `kubectl get ar` while a train stage showed progress (what the README shows).
	getAr string
	stop  context.CancelFunc
	done  chan struct{}
	polls int
}

func watchProgress(ctx context.Context, name string) *progressWatch {
	ctx, cancel := context.WithCancel(ctx)
	w := &progressWatch{stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for ctx.Err() == nil {
			if run, err := getRun(ctx, name); err == nil && run.Status.StageProgress != nil {
				p := *run.Status.StageProgress.DeepCopy()
				w.mu.Lock()
				if n := len(w.seen); n == 0 || w.seen[n-1].Done != p.Done || w.seen[n-1].Stage != p.Stage || w.seen[n-1].Phase != p.Phase {
					w.seen = append(w.seen, p)
				}
				w.polls++
				snap := w.getAr == "" && p.Stage == alignv1.StageTrain && p.Percent > 0 && p.Percent < 100
				w.mu.Unlock()
				if snap {
					out, _ := kubectl(ctx, nil, "get", "ar", "-n", namespace, name)
					w.mu.Lock()
					w.getAr = out
					w.mu.Unlock()
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(250 * time.Millisecond):
			}
		}
	}()
	return w
}

// checkProgressMoved: the train stage of phase k showed live progress that moved: at least two
// readings of its pods' summed optimizer steps, increasing, within the total, with the running
// loss and an ETA; and the finished run shows no progress any more.
func (w *progressWatch) checkProgressMoved(t *testing.T, run *alignv1.AlignmentRun, k int32) {
	t.Helper()
	w.stop()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	var train []alignv1.StageProgress
	for _, p := range w.seen {
		if p.Phase == k && p.Stage == alignv1.StageTrain {
			train = append(train, p)
		}
	}
	t.Logf("live progress of %s: %d readings (%d of phase %d train) over %d polls; $ kubectl get ar during a train stage:\n%s",
		run.Name, len(w.seen), len(train), k, w.polls, w.getAr)
	for _, p := range train {
		t.Logf("  phase %d %s: %d/%d (%d%%) pods %d rate %s eta %s metrics %v", p.Phase, p.Stage, p.Done, p.Total, p.Percent, p.Pods, p.Rate, p.ETA, p.Metrics)
	}
	if len(train) < 2 {
		t.Errorf("status.stageProgress of phase %d train was seen %d time(s); want it to move while the stage runs", k, len(train))
		return
	}
	for i, p := range train {
		if p.Total <= 0 || p.Done > p.Total || p.Percent != int32(100*p.Done/p.Total) || p.UpdateTime == nil {
			t.Errorf("reading %d: %+v", i, p)
		}
		if _, ok := p.Metrics["loss"]; !ok && p.Done > 0 {
			t.Errorf("reading %d: no running loss in %v", i, p.Metrics)
		}
		if i > 0 && p.Done < train[i-1].Done {
			t.Errorf("progress went back: %d after %d", p.Done, train[i-1].Done)
		}
	}
	if first, last := train[0], train[len(train)-1]; last.Done <= first.Done || last.ETA == "" && last.Done < last.Total {
		t.Errorf("progress did not move: first %+v last %+v", first, last)
	}
	if run.Status.StageProgress != nil {
		t.Errorf("the finished run still shows progress %+v", run.Status.StageProgress)
	}
}
