package serve

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/bpo-dev/bpo/trainer/model"
)

// The scheduler: continuous (iteration-level) batching, one engine per served model.
//
// An engine owns a KV cache of maxRows rows and runs one loop: admit waiting rows into free cache
// rows (prefill, one forward per prompt), draw every running row's next token, then feed all
// running rows' tokens to ONE batched forward (KVCache.Step) and go round again. A request's
// choices are rows; rows of different requests share every decode step, and new requests join
// at the next step instead of waiting for the batch to drain, as in vLLM. The base model and each
// adapter are separate engines: an adapter is served as its own dense merged weights (the
// inference API has no per-row LoRA path), so rows of different adapters cannot share a forward.

// job is one completion request inside an engine.
type job struct {
	ctx  context.Context
	opts decodeOptions
	rows []*row
	next int   // rows admitted into the batch so far (guarded by Server.mu)
	left int   // rows not yet finished (engine goroutine only)
	err  error // set before done is closed
	done chan struct{}
}

// engine decodes the requests of one served model.
type engine struct {
	s       *Server
	name    string
	inf     *model.Inference
	root    string // where the weights came from (GET /v1/models)
	parent  string // the base model's name, for an adapter
	maxRows int

	pending []*job        // waiting, FIFO (guarded by s.mu)
	closing bool          // unloaded or shutting down: take no new jobs, exit when idle (guarded by s.mu)
	wake    chan struct{} // capacity 1: "there may be work"
	exited  chan struct{}
}

func newEngine(s *Server, name string, inf *model.Inference, root, parent string) *engine {
	e := &engine{s: s, name: name, inf: inf, root: root, parent: parent, maxRows: s.opts.MaxBatch,
		wake: make(chan struct{}, 1), exited: make(chan struct{})}
	go e.run()
	return e
}

func (e *engine) poke() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// run is the engine's loop; it returns once closing and idle.
func (e *engine) run() {
	defer close(e.exited)
	s := e.s
	cache := e.inf.NewKVCache(e.maxRows)
	free := make([]int, 0, e.maxRows)
	for i := e.maxRows - 1; i >= 0; i-- {
		free = append(free, i)
	}
	var active []*row
	release := func(r *row) {
		free = append(free, r.slot)
		r.job.left--
		if r.job.left == 0 {
			e.finish(r.job)
		}
	}
	for {
		// Admit waiting rows, FIFO, into the free cache rows.
		var fresh []*row
		s.mu.Lock()
		for len(free) > 0 && len(e.pending) > 0 {
			j := e.pending[0]
			if j.ctx.Err() != nil { // the client went away while waiting
				j.left -= len(j.rows) - j.next
				e.popPending()
				if j.left == 0 {
					j.err = j.ctx.Err()
					e.finish(j)
				}
				continue
			}
			r := j.rows[j.next]
			j.next++
			r.slot, free = free[len(free)-1], free[:len(free)-1]
			fresh = append(fresh, r)
			if j.next == len(j.rows) {
				e.popPending()
			}
		}
		if len(active)+len(fresh) == 0 {
			closing := e.closing && len(e.pending) == 0
			s.mu.Unlock()
			if closing {
				return
			}
			<-e.wake
			continue
		}
		s.mu.Unlock()
		active = e.iterate(cache, active, fresh, release)
		s.metrics.runningRows.WithLabelValues(e.name).Set(float64(len(active)))
	}
}

// popPending drops the head of the queue (s.mu held).
func (e *engine) popPending() {
	e.pending = e.pending[1:]
	e.s.queued--
	e.s.metrics.queued.Set(float64(e.s.queued))
}

// iterate prefills the fresh rows, draws a token for every running row and runs one batched
// decode step. It returns the rows still running. A panic in the model (a bug: requests are
// checked before they get here) fails the rows in flight instead of the server.
func (e *engine) iterate(cache *model.KVCache, active, fresh []*row, release func(*row)) (still []*row) {
	all := append(active, fresh...)
	defer func() {
		if p := recover(); p != nil {
			slog.Error("serve: decode step failed", "model", e.name, "panic", fmt.Sprint(p))
			for _, r := range all {
				if r.finish == "" {
					r.job.err = fmt.Errorf("decode step failed: %v", p)
					release(r)
				}
			}
			still = nil
		}
	}()
	for _, r := range fresh {
		r.logits = cache.Prefill(r.slot, r.prompt)
	}
	if e.s.beforeStep != nil {
		e.s.beforeStep()
	}
	var slots, toks []int
	for _, r := range all {
		if err := r.job.ctx.Err(); err != nil {
			r.finish = "cancelled"
			r.job.err = err
			release(r)
			continue
		}
		n0 := len(r.out)
		tok, more, err := r.advance(e.s.tok, r.job.opts)
		if len(r.out) > n0 {
			e.s.metrics.generated.Inc()
		}
		if err != nil {
			r.job.err = fmt.Errorf("sampling: %w", err)
			r.finish = "error"
			release(r)
			continue
		}
		if !more {
			release(r)
			continue
		}
		still = append(still, r)
		slots, toks = append(slots, r.slot), append(toks, tok)
	}
	if len(slots) > 0 {
		e.s.metrics.batchRows.Observe(float64(len(slots)))
		next := cache.Step(slots, toks)
		for k, r := range still {
			r.logits = next[k]
		}
	}
	return still
}

// finish ends a job: its handler is woken and the server's in-flight count drops.
func (e *engine) finish(j *job) {
	close(j.done)
	e.s.inflight.Done()
}
