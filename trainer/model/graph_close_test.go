package model

import (
	"runtime"
	"testing"
)

// TestTrainersAreCollected guards against gorgonia's tape-machine finalizer keeping every
// trainer a process built alive (see grNewVM): building many must not grow the heap.
func TestTrainersAreCollected(t *testing.T) {
	cfg := Config{ModelType: "gpt2", VocabSize: 257, NPositions: 64, NEmbd: 32, NLayer: 2, NHead: 2,
		LayerNormEpsilon: 1e-5, ActivationFunction: "gelu_new", BOSTokenID: 256, EOSTokenID: 256}
	base := Init(cfg, 1)
	a := NewAdapter(cfg, 4, 8, 2)
	P := 8
	prompts, ch, rj := make([][]int, P), make([][]int, P), make([][]int, P)
	for i := range P {
		prompts[i], ch[i], rj[i] = []int{1, 2, 3}, []int{4, 5, 6, 7}, []int{8, 9}
	}
	b, err := PairBatch(prompts, ch, rj)
	if err != nil {
		t.Fatal(err)
	}
	heap := func() uint64 {
		var ms runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	build := func() uint64 {
		tr, err := NewTrainer(base, 4, 2*P, 60, Objective{Loss: grTestLoss("DPO", 0.1), Precision: Float64})
		if err != nil {
			t.Fatal(err)
		}
		ref, _, err := tr.LogProbs(nil, b)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tr.Step(a, b, ref); err != nil {
			t.Fatal(err)
		}
		h := heap() // tr is still live here: the size of one trainer
		runtime.KeepAlive(tr)
		return h
	}
	before := heap()
	one := build() - before
	for range 6 {
		build()
	}
	after := heap()
	t.Logf("one trainer %d KB; heap before %d KB, after 7 trainers %d KB", one>>10, before>>10, after>>10)
	if after > before+one {
		t.Fatalf("7 trainers left %d KB on the heap (one trainer is %d KB): trainers are not collected", (after-before)>>10, one>>10)
	}
}
