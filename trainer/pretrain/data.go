package pretrain

import (
	"math/rand/v2"

	"github.com/bpo-dev/bpo/trainer/model"
	"github.com/bpo-dev/bpo/trainer/tokenizer"
)

// The training rows: documents cut into pieces and packed, or streamed (see the package comment).

// lmPiece is a document or a piece of one: its tokens; the first is never predicted. final is
// false for a non-final piece of a long document (it does not end with EOT).
type lmPiece struct {
	toks  []int
	final bool
}

// lmRow is one training row.
type lmRow struct {
	toks []int
	mask []bool
}

// docIDs is a document's token ids with its closing EOT.
func docIDs(tok tokenizer.Tokenizer, text string) []int { return append(tok.Encode(text), tok.EOT()) }

// lmPieces cuts a document's ids (docIDs) into pieces of at most T tokens. The pieces share ids'
// storage; rows copy them (pieceRow, packRows).
func lmPieces(ids []int, T int) []lmPiece {
	if len(ids) < 2 {
		return nil
	}
	var out []lmPiece
	for start := 0; ; start += T - 1 {
		if start+T >= len(ids) {
			return append(out, lmPiece{toks: ids[start:], final: true})
		}
		out = append(out, lmPiece{toks: ids[start : start+T]})
	}
}

// packRows places pieces into rows of T tokens by first fit (a non-final piece fills a row
// alone); row order follows the first piece placed in each row.
func packRows(pieces []lmPiece, T int) []lmRow {
	var rows []lmRow
	var open []int // rows with room for a piece of 2 tokens
	for _, p := range pieces {
		if !p.final {
			rows = append(rows, pieceRow(p))
			continue
		}
		placed := false
		for k, r := range open {
			if T-len(rows[r].toks) >= len(p.toks) {
				rows[r].toks = append(rows[r].toks, p.toks...)
				rows[r].mask = append(rows[r].mask, pieceRow(p).mask...)
				if T-len(rows[r].toks) < 2 {
					open = append(open[:k], open[k+1:]...)
				}
				placed = true
				break
			}
		}
		if !placed {
			rows = append(rows, pieceRow(p))
			if T-len(p.toks) >= 2 {
				open = append(open, len(rows)-1)
			}
		}
	}
	return rows
}

func pieceRow(p lmPiece) lmRow {
	r := lmRow{toks: append([]int(nil), p.toks...), mask: make([]bool, len(p.toks))}
	for i := 1; i < len(r.mask); i++ {
		r.mask[i] = true
	}
	return r
}

// streamRows concatenates the documents (each ends with EOT) and cuts windows of T tokens with
// stride T-1; the first token of a window is context only.
func streamRows(docs [][]int, T int) []lmRow {
	var s []int
	for _, d := range docs {
		s = append(s, d...)
	}
	var rows []lmRow
	for start := 0; start+1 < len(s); start += T - 1 {
		end := min(start+T, len(s))
		r := lmRow{toks: s[start:end], mask: make([]bool, end-start)}
		for i := 1; i < len(r.mask); i++ {
			r.mask[i] = true
		}
		rows = append(rows, r)
	}
	return rows
}

// lmData is the training stream: rows of epoch e come from a shuffle keyed by (seed, e).
type lmData struct {
	docs   [][]int // token ids of every training document, EOT included
	T      int
	layout string
	seed   uint64

	epoch int
	rows  []lmRow
	next  int
}

func newLMData(tok tokenizer.Tokenizer, texts []string, T int, layout string, seed uint64) *lmData {
	d := &lmData{T: T, layout: layout, seed: seed, epoch: -1}
	for _, t := range texts {
		if ids := docIDs(tok, t); len(ids) >= 2 {
			d.docs = append(d.docs, ids)
		}
	}
	return d
}

func (d *lmData) epochRows(e int) []lmRow {
	rng := rand.New(rand.NewPCG(d.seed, 0x5eed0000+uint64(e)))
	order := rng.Perm(len(d.docs))
	if d.layout == LayoutStream {
		docs := make([][]int, len(order))
		for i, k := range order {
			docs[i] = d.docs[k]
		}
		return streamRows(docs, d.T)
	}
	var pieces []lmPiece
	for _, k := range order {
		pieces = append(pieces, lmPieces(d.docs[k], d.T)...)
	}
	rows := packRows(pieces, d.T)
	rng.Shuffle(len(rows), func(i, j int) { rows[i], rows[j] = rows[j], rows[i] })
	return rows
}

// batch returns the next n rows of the stream (crossing into the next epoch as needed).
func (d *lmData) batch(n int) model.Batch {
	b := model.Batch{Tokens: make([][]int, n), Mask: make([][]bool, n)}
	for i := range n {
		for d.epoch < 0 || d.next >= len(d.rows) {
			d.epoch++
			d.rows, d.next = d.epochRows(d.epoch), 0
		}
		r := d.rows[d.next]
		d.next++
		b.Tokens[i], b.Mask[i] = r.toks, r.mask
	}
	return b
}

// skip advances the stream past the batches of the first `steps` steps of n rows.
func (d *lmData) skip(steps, n int) {
	for range steps {
		d.batch(n)
	}
}

func rowFill(rows []lmRow, T int) float64 {
	n := 0
	for _, r := range rows {
		n += len(r.toks)
	}
	return float64(n) / float64(len(rows)*T)
}
