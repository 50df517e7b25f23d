package kernels

import (
	"sync"

	"github.com/bpo-dev/bpo/trainer/blas"
)

// Workers is the number of goroutines a kernel may use: trainer/blas's thread count (BPO_THREADS,
// else GOMAXPROCS, which follows the container's CPU limit).
func Workers() int { return max(blas.Threads(), 1) }

// For runs fn over [0,n) in at most Workers() contiguous chunks of at least minPerWorker items;
// worker is the chunk index (for per-worker scratch). Small n runs inline. Kernels only split
// work whose items are independent, so the split never changes a result.
func For(n, minPerWorker int, fn func(worker, lo, hi int)) {
	w := Workers()
	if minPerWorker < 1 {
		minPerWorker = 1
	}
	w = min(w, n/minPerWorker)
	if w <= 1 {
		if n > 0 {
			fn(0, 0, n)
		}
		return
	}
	var wg sync.WaitGroup
	chunk := (n + w - 1) / w
	for k := 0; k < w; k++ {
		lo, hi := k*chunk, min((k+1)*chunk, n)
		if lo >= hi {
			break
		}
		wg.Add(1)
		go func(k, lo, hi int) {
			defer wg.Done()
			fn(k, lo, hi)
		}(k, lo, hi)
	}
	wg.Wait()
}
