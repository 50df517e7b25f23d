// Package storage keeps a run's workspace in object storage (s3://, gs://) or in a folder
// (file://), behind one small API built on gocloud.dev/blob.
//
// The stage runtime needs few operations, and each has one guarantee on every backend:
//
//   - Write and WriteFrom: a reader sees the old object, or no object, or the whole new one;
//     never a half-written one (S3/GCS: a PUT is atomic; file://: temp file + rename).
//   - Create: create-only; of two writers of the same key exactly one succeeds, the other
//     gets an error matching ErrExist (S3: If-None-Match "*"; GCS: generation 0;
//     file://: a hard link, which is atomic across processes and hosts sharing the folder).
//   - Stage and Publish move a stage's inputs into a local folder and its outputs back; Publish
//     writes the done marker last, so a reader that checks the marker never reads a partial
//     result.
//
// Keys are slash-separated paths relative to the store's prefix (the layout of
// pipeline.Workspace: "phase-1/samples/shard-0.jsonl"). Errors match fs.ErrNotExist and
// fs.ErrExist with errors.Is, so code written against os keeps working, and never carry
// credentials. See docs/storage.md.
package storage
