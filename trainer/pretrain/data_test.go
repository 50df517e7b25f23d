package pretrain

import (
	"testing"

	"github.com/bpo-dev/bpo/trainer/tokenizer"
)

func TestPackingPredictsEveryByteOnce(t *testing.T) {
	tok := tokenizer.Byte{}
	texts := []string{"a", "hello there", "a sentence longer than sixteen bytes, split into pieces", "ok", "x y z w"}
	const T = 16
	bytes := 0
	var pieces []lmPiece
	for _, s := range texts {
		bytes += len(s)
		pieces = append(pieces, lmPieces(docIDs(tok, s), T)...)
	}
	rows := packRows(pieces, T)
	masked, eots := 0, 0
	for _, r := range rows {
		if len(r.toks) > T || len(r.mask) != len(r.toks) {
			t.Fatalf("row of %d tokens, mask %d", len(r.toks), len(r.mask))
		}
		if r.mask[0] {
			t.Error("a row's first token is masked")
		}
		for i, m := range r.mask {
			if m {
				masked++
			}
			if r.toks[i] == tok.EOT() {
				eots++
				if i+1 < len(r.toks) && r.mask[i+1] {
					t.Error("the token after an EOT (a document start) is masked")
				}
			}
		}
	}
	if masked != bytes || eots != len(texts) {
		t.Errorf("%d masked tokens and %d EOTs for %d bytes in %d texts", masked, eots, bytes, len(texts))
	}
	if len(rows) >= len(pieces) {
		t.Errorf("%d pieces in %d rows: nothing was packed", len(pieces), len(rows))
	}
	var docs [][]int
	for _, s := range texts {
		docs = append(docs, append(tok.Encode(s), tok.EOT()))
	}
	masked = 0
	for _, r := range streamRows(docs, T) {
		for _, m := range r.mask {
			if m {
				masked++
			}
		}
	}
	if masked != bytes+len(texts)-1 { // every token of the stream but the first
		t.Errorf("stream: %d masked tokens, want %d", masked, bytes+len(texts)-1)
	}
}
