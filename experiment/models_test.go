package experiment

import (
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bpo-dev/bpo/pipeline"
	"github.com/bpo-dev/bpo/trainer/model"
)

// TestStackedAdapterStartsWhereTheEnsembleStarts: the derived model's single adapter merges to
// the same weights as the mean of the built-in model's first three adapters.
func TestStackedAdapterStartsWhereTheEnsembleStarts(t *testing.T) {
	dir := filepath.Join(t.TempDir(), ModelsDir, "tiny-stack3")
	d := DerivedModel{Name: "tiny-stack3", Builtin: "tiny-reviews", StackAdapters: 3}
	if err := prepareModel(d, dir); err != nil {
		t.Fatal(err)
	}
	base, err := model.LoadWeights(dir)
	if err != nil {
		t.Fatal(err)
	}
	stacked, err := model.LoadAdapterFor(pipeline.AdapterFile(dir, 0), base.Config)
	if err != nil {
		t.Fatal(err)
	}
	if stacked.Rank != 24 || stacked.Alpha != 16 {
		t.Fatalf("stacked adapter rank %d alpha %g, want 24 and 16", stacked.Rank, stacked.Alpha)
	}
	if _, err := model.LoadAdapter(pipeline.AdapterFile(dir, 1)); err == nil {
		t.Fatal("the derived model must hold one adapter only")
	}
	// The three members, from the built-in model's folder.
	src, _ := filepath.Abs(filepath.Join("..", "trainer", "task", "models", "tiny-reviews"))
	var members []*model.Adapter
	for m := range 3 {
		a, err := model.LoadAdapterFor(pipeline.AdapterFile(src, m), base.Config)
		if err != nil {
			t.Fatal(err)
		}
		members = append(members, a)
	}
	want := model.MergeMean(base, members)
	got := model.MergeMean(base, []*model.Adapter{stacked})
	worst := 0.0
	for name, w := range want.Tensors {
		for i, v := range w.Data {
			worst = math.Max(worst, math.Abs(v-got.Tensors[name].Data[i]))
		}
	}
	if worst > 1e-12 {
		t.Fatalf("stacked merge differs from the ensemble's initial model by %g", worst)
	}
	// Idempotent: a finished folder is left alone.
	if err := prepareModel(d, dir); err != nil {
		t.Fatal(err)
	}
}

func TestDerivedModelErrors(t *testing.T) {
	for _, c := range []struct {
		d    DerivedModel
		want string
	}{
		{DerivedModel{Name: "Bad", Builtin: "tiny-reviews", StackAdapters: 3}, "models: name"},
		{DerivedModel{Name: "x", StackAdapters: 3}, "models.x: builtin"},
		{DerivedModel{Name: "x", Builtin: "tiny-reviews", StackAdapters: 1}, "models.x: stackAdapters"},
	} {
		if err := c.d.check(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.d, err, c.want)
		}
	}
	err := prepareModel(DerivedModel{Name: "x", Builtin: "tiny-reviews", StackAdapters: 9}, t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "stackAdapters is at most") {
		t.Errorf("more adapters than the model has: %v", err)
	}
	if _, err := StackAdapters([]*model.Adapter{{Rank: 2, Alpha: 4}, {Rank: 4, Alpha: 4}}); err == nil {
		t.Error("adapters of different ranks must not stack")
	}
}
