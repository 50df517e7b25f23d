package pretrain

import (
	"fmt"
	"hash/fnv"
	"math"

	"github.com/bpo-dev/bpo/trainer/model"
	"github.com/bpo-dev/bpo/trainer/tokenizer"
)

// SplitHeldOut is the deterministic 2% held-out split of Pretrain and SFT (see the package
// comment): the training texts and the held-out ones, each in input order.
func SplitHeldOut(texts []string) (train, heldOut []string) {
	tr, ho := splitHeldOutIdx(texts)
	return pick(texts, tr), pick(texts, ho)
}

// splitHeldOutIdx is SplitHeldOut as indices into texts.
func splitHeldOutIdx(texts []string) (train, heldOut []int) {
	best, bestH := -1, uint64(math.MaxUint64)
	for i, t := range texts {
		h := fnv.New64a()
		h.Write([]byte(t))
		s := h.Sum64()
		if s%50 == 0 {
			heldOut = append(heldOut, i)
		} else {
			train = append(train, i)
		}
		if s < bestH {
			best, bestH = i, s
		}
	}
	if len(heldOut) == 0 && len(texts) > 1 {
		heldOut = []int{best}
		train = append(train[:best:best], train[best+1:]...)
	}
	return train, heldOut
}

// pick returns xs[i] for each i of idx (nil when xs is nil).
func pick(xs []string, idx []int) []string {
	if xs == nil {
		return nil
	}
	out := make([]string, 0, len(idx))
	for _, i := range idx {
		out = append(out, xs[i])
	}
	return out
}

// heldOutSet is the held-out documents packed once, in order: preds tokens are predicted (every
// token after a document's first, and its EOT) for the documents' bytes of text.
type heldOutSet struct {
	rows         []lmRow
	bytes, preds int
}

func newHeldOutSet(tok tokenizer.Tokenizer, texts []string, T int) heldOutSet {
	var pieces []lmPiece
	h := heldOutSet{}
	for _, t := range texts {
		ids := docIDs(tok, t)
		p := lmPieces(ids, T)
		if len(p) > 0 {
			h.bytes += len(t)
			h.preds += len(ids) - 1
		}
		pieces = append(pieces, p...)
	}
	h.rows = packRows(pieces, T)
	return h
}

// natsPerByte evaluates the held-out rows with tr (packed) and adapter a (LoRA mode; nil for
// full mode or the base model).
func (h heldOutSet) natsPerByte(tr *model.LMTrainer, a *model.Adapter) (float64, error) {
	if h.bytes == 0 {
		return math.NaN(), nil
	}
	B := tr.Batch()
	var sum float64
	var count int
	for lo := 0; lo < len(h.rows); lo += B {
		b := model.Batch{Tokens: make([][]int, B), Mask: make([][]bool, B)}
		for i := 0; i < B && lo+i < len(h.rows); i++ {
			b.Tokens[i], b.Mask[i] = h.rows[lo+i].toks, h.rows[lo+i].mask
		}
		l, n, err := tr.Loss(a, b)
		if err != nil {
			return 0, err
		}
		sum += l * float64(n)
		count += n
	}
	if count != h.preds {
		return 0, fmt.Errorf("held-out: %d predictions, want %d", count, h.preds)
	}
	return sum / float64(h.bytes), nil
}

// HeldOutNatsPerByte is the held-out loss (nats/byte, the split and measure of Pretrain) of the
// model w, or of w with adapter a when a is not nil, on the held-out part of texts, tokenised by
// tok (nil: byte-level).
func HeldOutNatsPerByte(w *model.Weights, a *model.Adapter, tok tokenizer.Tokenizer, texts []string, batch int) (float64, error) {
	_, held := SplitHeldOut(texts)
	return NatsPerByte(w, a, tok, held, batch)
}

// NatsPerByte is the loss of the model w (with adapter a when not nil) on every one of texts,
// each a document ending with end-of-text, in nats per byte of text (see the package comment).
func NatsPerByte(w *model.Weights, a *model.Adapter, tok tokenizer.Tokenizer, texts []string, batch int) (float64, error) {
	if tok == nil {
		tok = tokenizer.Byte{}
	}
	if err := checkModel(w.Config, tok); err != nil {
		return 0, err
	}
	T := w.Config.NPositions
	var tr *model.LMTrainer
	var err error
	if a != nil {
		tr, err = model.NewLoRALMTrainer(w, a.Rank, max(batch, 1), T, model.LMOptions{Packed: true})
	} else {
		tr, err = model.NewLMTrainer(w, max(batch, 1), T, model.LMOptions{Packed: true})
	}
	if err != nil {
		return 0, err
	}
	return newHeldOutSet(tok, texts, T).natsPerByte(tr, a)
}
