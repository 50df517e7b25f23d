package pretrain

import (
	"math"
	"testing"

	"github.com/bpo-dev/bpo/trainer/model"
	"github.com/bpo-dev/bpo/trainer/task"
)

func reviewsTask(t *testing.T) *task.Task {
	t.Helper()
	tk, err := task.Builtin("reviews")
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

// tinyConfig is a model small enough for tests: d16, 1 layer, 2 heads, 32 positions.
func tinyConfig() model.Config { return ByteConfig(16, 1, 2, 32) }

func tinyOptions(steps int) PretrainOptions {
	return PretrainOptions{LMOptions: LMOptions{Steps: steps, Batch: 4, LR: 1e-2, Seed: 7, WeightDecay: 0.1, EvalEvery: 5}}
}

func sameWeights(t *testing.T, a, b *model.Weights) {
	t.Helper()
	for name, ta := range a.Tensors {
		tb := b.Tensors[name]
		for i := range ta.Data {
			if math.Float64bits(ta.Data[i]) != math.Float64bits(tb.Data[i]) {
				t.Fatalf("%s[%d]: %v vs %v (not bit-identical)", name, i, ta.Data[i], tb.Data[i])
			}
		}
	}
}

func sameShape(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func sameData(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float64bits(a[i]) != math.Float64bits(b[i]) {
			return false
		}
	}
	return true
}

func maxAbs(x []float64) float64 {
	var m float64
	for _, v := range x {
		m = math.Max(m, math.Abs(v))
	}
	return m
}
