package experiment

import (
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bpo-dev/bpo/pipeline"
	"github.com/bpo-dev/bpo/trainer/model"
)

func near(a, b, tol float64) bool { return math.Abs(a-b) <= tol }

// newVolume makes a workspace volume holding a tiny random model with two SFT adapters
// that differ (nonzero B), so the ensemble's members are distinct (the same model as
// pipeline's test volume).
func newVolume(t *testing.T) string {
	t.Helper()
	vol := t.TempDir()
	cfg := model.Config{ModelType: "gpt2", VocabSize: 257, NPositions: 64, NEmbd: 16, NLayer: 1, NHead: 2,
		LayerNormEpsilon: 1e-5, ActivationFunction: "gelu_new", BOSTokenID: 256, EOSTokenID: 256}
	dir := filepath.Join(vol, "models", "tiny")
	if err := model.SaveWeights(dir, model.Init(cfg, 7)); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	if err := os.MkdirAll(filepath.Join(dir, "adapters"), 0o755); err != nil {
		t.Fatal(err)
	}
	for m := range 2 {
		a := model.NewAdapter(cfg, 2, 4, int64(m+1))
		// In name order: the fixture must be the same model every time (map order is random).
		for _, name := range slices.Sorted(maps.Keys(a.Tensors)) {
			if ten := a.Tensors[name]; strings.HasSuffix(name, "lora_B") {
				for i := range ten.Data {
					ten.Data[i] = 0.05 * rng.NormFloat64()
				}
			}
		}
		if err := model.SaveAdapter(pipeline.AdapterFile(dir, m), a); err != nil {
			t.Fatal(err)
		}
	}
	return vol
}
