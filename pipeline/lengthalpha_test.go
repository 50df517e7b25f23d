package pipeline

import (
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/trainer/loss"
	"github.com/bpo-dev/bpo/trainer/model"
)

// TestLengthAlpha: spec.loss.lengthAlpha changes what the train stage optimises (the same pairs
// give another adapter), "0" is the plain loss to the bit, the reported loss is the loss as
// trained (recomputed here from the trained member with the shifted reference), and the token
// counts the diagnostics shift by are the response lengths the training batch shifts by.
func TestLengthAlpha(t *testing.T) {
	vol := newVolume(t)
	train := func(name, alpha string) (*Env, v1alpha1.StageResult) {
		b := makeRun(name)
		b.ar.Spec.Loss.LengthAlpha = v1alpha1.Decimal(alpha)
		e := b.Env(t, vol)
		if _, err := e.Sample(1, 0, 1); err != nil {
			t.Fatal(err)
		}
		if _, err := e.Label(1, 0, 1); err != nil {
			t.Fatal(err)
		}
		// The tiny random model rarely ends a response before maxNewTokens, so every response has
		// the same length and the length term cancels: shorten every other chosen response (the
		// train stage reads only ids and stored log-probs, so the pairs stay valid for it).
		pairs, err := ReadJSONL[Pair](e.WS.PairsPath(1, 0))
		if err != nil {
			t.Fatal(err)
		}
		for i := range pairs {
			if i%2 == 0 && len(pairs[i].ChosenIDs) > 2 {
				pairs[i].ChosenIDs = pairs[i].ChosenIDs[:len(pairs[i].ChosenIDs)-2]
			}
		}
		if err := WriteJSONL(e.WS.PairsPath(1, 0), pairs); err != nil {
			t.Fatal(err)
		}
		r, err := e.Train(1, 0)
		if err != nil {
			t.Fatal(err)
		}
		return e, r
	}
	adapter := func(e *Env) []byte {
		b, err := os.ReadFile(filepath.Join(e.WS.MemberDir(1, 0), "adapter.safetensors"))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	ePlain, _ := train("plain", "")
	eZero, _ := train("zero", "0")
	eLen, rLen := train("len", "0.3")
	if eLen.Run.LengthAlpha != 0.3 || eZero.Run.LengthAlpha != 0 {
		t.Fatalf("parsed lengthAlpha %v and %v", eLen.Run.LengthAlpha, eZero.Run.LengthAlpha)
	}
	if string(adapter(ePlain)) != string(adapter(eZero)) {
		t.Errorf(`lengthAlpha "0" trained another adapter than no lengthAlpha`)
	}
	if string(adapter(ePlain)) == string(adapter(eLen)) {
		t.Errorf("lengthAlpha 0.3 trained the same adapter as the plain loss")
	}

	pairs, err := eLen.PhasePairs(1)
	if err != nil || len(pairs) == 0 {
		t.Fatalf("%d pairs, %v", len(pairs), err)
	}
	b, err := eLen.LoadBase()
	if err != nil {
		t.Fatal(err)
	}
	a, _, err := eLen.loadMember(1, 0)
	if err != nil {
		t.Fatal(err)
	}
	P := int(eLen.Run.Spec.Budget.PairsPerStep)
	tr, err := model.NewTrainer(b.Weights, a.Rank, 2*P, pairsSeqLen(pairs), eLen.Run.objective())
	if err != nil {
		t.Fatal(err)
	}
	pc, pr, cc, cr, err := eLen.policyLogps(tr, a, pairs, P)
	if err != nil {
		t.Fatal(err)
	}
	rc, rr := make([]float64, len(pairs)), make([]float64, len(pairs))
	for i, p := range pairs {
		if cc[i] != len(p.ChosenIDs) || cr[i] != len(p.RejectedIDs) {
			t.Fatalf("pair %d: counts %d/%d, response lengths %d/%d", i, cc[i], cr[i], len(p.ChosenIDs), len(p.RejectedIDs))
		}
		rc[i] = p.ReferenceLogps[0] - 0.3/eLen.Run.Beta*float64(len(p.ChosenIDs))
		rr[i] = p.ReferenceLogps[1] - 0.3/eLen.Run.Beta*float64(len(p.RejectedIDs))
	}
	want, _ := loss.Values(eLen.Run.Loss, eLen.Run.Beta, pc, pr, rc, rr)
	if rLen.Loss == nil || math.Abs(*rLen.Loss-want) > 1e-9 {
		t.Errorf("reported loss %v, want %v (the shifted loss of the trained member)", rLen.Loss, want)
	}
	idx := []int{0}
	_, ref, err := pairBatch(pairs, idx, 0.3, eLen.Run.Beta)
	if err != nil {
		t.Fatal(err)
	}
	if ref[0] != rc[0] || ref[1] != rr[0] {
		t.Errorf("batch reference %v, want %v %v", ref, rc[0], rr[0])
	}
}
