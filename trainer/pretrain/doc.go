// Package pretrain builds a base model folder: language-model pretraining of a GPT-2 (every
// base tensor) and the SFT LoRA adapters that initialise the ensemble members. `bpo pretrain`
// and `bpo sft` run these; trainer/task/models/tiny-reviews is their output (see the Makefile
// target `models`).
//
// Data. Every text is one document: its tokens followed by end-of-text (EOT). A document longer
// than the sequence length T is cut into pieces of T tokens that overlap by one token (the first
// token of a piece is context only), so every token after a document's first is predicted exactly
// once per pass. Layout "packed" (the default) places whole pieces into rows of T tokens by
// first fit, several per row, and trains with model.LMOptions{Packed: true}: positions restart and
// attention stops at every document, so each document is seen exactly as inference sees a prompt
// (alone, at position 0) while the rows are almost full. Layout "stream" is GPT-2's: the
// documents, each followed by EOT, are concatenated and cut into windows of T tokens (stride
// T-1), attention crossing documents. Both are reshuffled every epoch from (seed, epoch).
//
// Held-out loss. A deterministic 2% of the texts (FNV-1a hash of the text mod 50 == 0; the text
// with the smallest hash if none is) is never trained on. Its loss is reported in nats per byte:
// the summed negative log-likelihood of every held-out document's tokens after the first and of
// its closing EOT, divided by the documents' bytes of text (with the byte-level tokenizer, as
// many predictions as bytes; with BPE fewer, but the loss is still quoted per byte so that
// models with different tokenizers compare).
//
// Optimisation. AdamW (trainer/optim) with weight decay on matrices only (Conv1D weights, wte,
// wpe; LoRA A and B), global gradient-norm clipping, linear warm-up and a cosine or linear
// decay that reaches its floor at the last step.
//
// Determinism. All randomness comes from the seed (weights: model.Init; data order: PCG streams
// keyed by seed and epoch), every kernel reduces in a fixed order (gonum's GEMM partitions by
// block, not by thread count), so a run is bit-identical for a given command whatever
// GOMAXPROCS is. A checkpoint holds the weights and the AdamW moments in F64 and the step count,
// which is the whole training state: a resumed run continues bit-identically.
package pretrain
