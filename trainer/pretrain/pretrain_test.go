package pretrain

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/bpo-dev/bpo/trainer/model"
)

// TestPretrainLowersLoss: a few steps on the reviews texts lower the training and held-out loss.
func TestPretrainLowersLoss(t *testing.T) {
	tk := reviewsTask(t)
	texts := tk.Pretrain[:400]
	cfg := tinyConfig()
	for _, layout := range []string{LayoutPacked, LayoutStream} {
		t.Run(layout, func(t *testing.T) {
			o := tinyOptions(30)
			o.Layout = layout
			var losses, lrs []float64
			o.Progress = func(p LMProgress) error { losses, lrs = append(losses, p.Loss), append(lrs, p.LR); return nil }
			before, err := HeldOutNatsPerByte(model.Init(cfg, int64(o.Seed)), nil, nil, texts, 4)
			if err != nil {
				t.Fatal(err)
			}
			w, rep, err := Pretrain(cfg, texts, o)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("train loss %.3f -> %.3f; held-out %.3f -> %.3f nats/byte; %d rows/epoch, %.1f%% full",
				losses[0], rep.TrainLoss, before, rep.HeldOut, rep.RowsPerEpoch, 100*rep.Fill)
			if !(losses[len(losses)-1] < losses[0]-0.5) || !(rep.HeldOut < before-0.5) {
				t.Errorf("loss did not drop: train %.3f -> %.3f, held-out %.3f -> %.3f", losses[0], losses[len(losses)-1], before, rep.HeldOut)
			}
			// warm-up of 30/20 = 1 step at LR, then cosine down to 0.1·LR at the last step
			if lrs[0] != o.LR || lrs[29] != o.LR*0.1 || !(lrs[15] < lrs[14]) {
				t.Errorf("rates %v", lrs)
			}
			again, err := HeldOutNatsPerByte(w, nil, nil, texts, 3)
			if err != nil {
				t.Fatal(err)
			}
			// Another batch size packs other rows into other GEMM shapes: float32 rounding moves
			// the last digits (the engine computes in float32; sums accumulate in float64).
			if math.Abs(again-rep.HeldOut) > 1e-6*rep.HeldOut {
				t.Errorf("HeldOutNatsPerByte %.15g, report %.15g", again, rep.HeldOut)
			}
			if len(rep.Curve) != 6 || rep.Curve[5].Step != 30 {
				t.Errorf("held-out curve %v", rep.Curve)
			}
		})
	}
}

var errStop = errors.New("stopped")

// TestPretrainResume: a run stopped after step 8 (checkpoint at 5) and run again resumes from
// step 5 and ends bit-identical to an uninterrupted run; the checkpoint of another
// configuration is refused. The uninterrupted run uses GOMAXPROCS 1 and the others the
// default, so this also checks that the thread count does not change the result.
func TestPretrainResume(t *testing.T) {
	tk := reviewsTask(t)
	texts := tk.Pretrain[:300]
	cfg := tinyConfig()

	prev := runtime.GOMAXPROCS(1)
	ref, refRep, err := Pretrain(cfg, texts, tinyOptions(12))
	runtime.GOMAXPROCS(prev)
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	o := tinyOptions(12)
	o.CheckpointDir, o.CheckpointEvery = dir, 5
	o.Progress = func(p LMProgress) error {
		if p.Step == 8 {
			return errStop
		}
		return nil
	}
	if _, _, err := Pretrain(cfg, texts, o); !errors.Is(err, errStop) {
		t.Fatalf("interrupted run: err = %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, CheckpointFile)); err != nil {
		t.Fatal(err)
	}
	var steps []int
	o.Progress = func(p LMProgress) error { steps = append(steps, p.Step); return nil }
	w, rep, err := Pretrain(cfg, texts, o)
	if err != nil {
		t.Fatal(err)
	}
	if rep.ResumedFrom != 5 || steps[0] != 6 || len(steps) != 7 {
		t.Errorf("resumed from %d, ran steps %v", rep.ResumedFrom, steps)
	}
	sameWeights(t, ref, w)
	if rep.Tokens != refRep.Tokens || rep.HeldOut != refRep.HeldOut || len(rep.Curve) != len(refRep.Curve) {
		t.Errorf("report after resume: tokens %d held-out %v curve %v; uninterrupted: %d %v %v",
			rep.Tokens, rep.HeldOut, rep.Curve, refRep.Tokens, refRep.HeldOut, refRep.Curve)
	}
	// a finished checkpoint: the run returns at once with the same weights
	w2, rep2, err := Pretrain(cfg, texts, o)
	if err != nil {
		t.Fatal(err)
	}
	sameWeights(t, ref, w2)
	if rep2.ResumedFrom != 12 {
		t.Errorf("second rerun resumed from %d", rep2.ResumedFrom)
	}
	// another pretraining refuses the checkpoint
	o.LR = 2e-2
	if _, _, err := Pretrain(cfg, texts, o); err == nil {
		t.Error("a checkpoint of another configuration was accepted")
	}
}
