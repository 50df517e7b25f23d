package pretrain

import "testing"

func TestHeldOutSplit(t *testing.T) {
	tk := reviewsTask(t)
	train, held := SplitHeldOut(tk.Pretrain)
	frac := float64(len(held)) / float64(len(tk.Pretrain))
	if frac < 0.01 || frac > 0.03 || len(train)+len(held) != len(tk.Pretrain) {
		t.Errorf("held-out %d of %d (%.2f%%)", len(held), len(tk.Pretrain), 100*frac)
	}
	train2, held2 := SplitHeldOut(append([]string(nil), tk.Pretrain...))
	if len(held2) != len(held) || held2[0] != held[0] || len(train2) != len(train) {
		t.Error("the split is not deterministic")
	}
	if _, h := SplitHeldOut([]string{"one", "two"}); len(h) != 1 {
		t.Errorf("tiny input: %d held-out texts, want 1", len(h))
	}
}
