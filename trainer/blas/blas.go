// Package blas is the matrix-multiply backend of the trainer: one generic Gemm over float32 and
// float64, row-major, computed by OpenBLAS when the process can load it (cgo build, dlopen of
// libopenblas.so.0 at first use) and by gonum's pure-Go BLAS otherwise (no cgo, no library, or
// BPO_BLAS=gonum).
//
// Parallelism is done here, not inside OpenBLAS: OpenBLAS runs single-threaded, and Gemm splits
// the rows of C into at most Threads() blocks (per super-block of 4608 rows; see split), each
// block one single-threaded backend call on its own goroutine. A process-wide semaphore of size
// Threads() bounds the backend calls that run at once, also across callers that already call Gemm
// from several goroutines (attention heads), so cores are never oversubscribed.
//
// Results are deterministic: the same inputs give bit-identical C whatever Threads() is (block
// boundaries are placed where they cannot change any element; TestDeterministicAcrossThreads
// and TestDeterministicOtherCores check it on the machine's OpenBLAS), and which kernel computes
// a call depends only on its shape.
//
// Routing: with OpenBLAS loaded every call goes to it; a one-row call (m == 1) goes to its gemv,
// because 0.3.21's gemm packs B even for one row. Measured on the 2-core Zen3 (BenchmarkSgemmShapes,
// single-threaded kernels, GFLOP/s, OpenBLAS / gonum / a hand-written Go loop): 128×128×32
// 55 / 8.2 / 2.6; 128×32×128 65 / 7.3 / 2.1; 256×256×32 69 / 9.3 / 2.9; 2048×8×256 49 / 2.2 / 2.0;
// 8×256×2048 52 / 9.9 / 2.8; down to 8×8×8 OpenBLAS's ~0.2 µs call beats both. One row through
// gemv: 1×4096×256 27 / 7.4 / 3.0; 1×256×32 (a decode step's q·Kᵀ per head) 38 / 9.4 / 2.9;
// 1×32×256 (P·V) 32 / 7.2 / 2.6, where gemm was 5.7 / 7.7 on 1×4096×256. The Go loop was never
// fastest, so it is not used.
package blas

import (
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Info describes the backend in use, for logs and `bpo bench` output.
type Info struct {
	Name     string // "openblas" or "gonum"
	Library  string // path/soname loaded, "" for gonum
	CoreType string // OpenBLAS's openblas_get_corename() (e.g. "Haswell", "SkylakeX", "Zen"), "" for gonum
	Threads  int    // Threads()
	Reason   string // why this backend (e.g. "BPO_BLAS=gonum", "libopenblas.so.0 not found: ...", "cgo disabled")
}

// Backend describes the backend Gemm uses (loading it on first use).
func Backend() Info {
	e := current()
	return Info{Name: e.name, Library: e.library, CoreType: e.coreType, Threads: Threads(), Reason: e.reason}
}

// gemmFunc is one single-threaded backend call on a block (arguments already checked, m, n, k > 0,
// alpha != 0).
type gemmFunc[F float32 | float64] func(tA, tB bool, m, n, k int, alpha F, a []F, lda int, b []F, ldb int, beta F, c []F, ldc int)

// engine is a backend: its single-threaded kernels and how finely its calls may be split.
type engine struct {
	name, library, coreType, reason string

	sgemm gemmFunc[float32]
	dgemm gemmFunc[float64]

	// minBlockWork is the least m·n·k of one block of a split call (see split).
	minBlockWork float64
}

var (
	engineOnce sync.Once
	active     atomic.Pointer[engine]
	gonumOnce  = sync.OnceValue(func() *engine { return newGonum("") })
)

// current returns the engine in use, choosing it on the first call: gonum when BPO_BLAS=gonum or
// OpenBLAS cannot be loaded, OpenBLAS otherwise.
func current() *engine {
	if e := active.Load(); e != nil {
		return e
	}
	engineOnce.Do(func() {
		e := chooseEngine()
		active.CompareAndSwap(nil, e)
	})
	return active.Load()
}

func chooseEngine() *engine {
	switch v := strings.ToLower(strings.TrimSpace(os.Getenv("BPO_BLAS"))); v {
	case "gonum":
		return newGonum("BPO_BLAS=gonum")
	case "", "openblas", "auto":
	default:
		warnf("bpo/blas: BPO_BLAS=%q is not one of openblas, gonum; trying openblas", v)
	}
	e, err := openBLAS()
	if err != nil {
		if cgoBuild { // a cgo build meant to use OpenBLAS: say so, once, rather than run 5x slower unseen
			warnf("bpo/blas: OpenBLAS not loaded (%v): using gonum's pure-Go GEMM, several times slower and with other last bits; install libopenblas0-pthread, or set BPO_BLAS=gonum to choose gonum", err)
		}
		return newGonum(err.Error())
	}
	return e
}

func newGonum(reason string) *engine {
	return &engine{name: "gonum", reason: reason, sgemm: gonumSgemm, dgemm: gonumDgemm,
		minBlockWork: gonumMinBlockWork}
}

// useEngine switches the process to the named backend ("gonum" or "openblas") and returns a
// function restoring the previous one; ok is false (and nothing changes) when the backend is not
// available. It is the tests' hook to run every check under every backend.
func useEngine(name string) (restore func(), ok bool) {
	prev := current()
	var e *engine
	switch name {
	case "gonum":
		e = gonumOnce()
	case "openblas":
		var err error
		if e, err = openBLAS(); err != nil {
			return func() {}, false
		}
	default:
		return func() {}, false
	}
	active.Store(e)
	return func() { active.Store(prev) }, true
}

var warned sync.Map

// warnf prints a warning to stderr once per message.
func warnf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if _, dup := warned.LoadOrStore(msg, true); !dup {
		fmt.Fprintln(os.Stderr, msg)
	}
}

// Threads.

var threadsSet atomic.Int64

var envThreads = sync.OnceValue(func() int { return parseThreads(os.Getenv("BPO_THREADS")) })

// parseThreads reads BPO_THREADS: a positive integer, else 0 (unset; a warning if malformed).
func parseThreads(v string) int {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		warnf("bpo/blas: ignoring BPO_THREADS=%q (want a positive integer)", v)
		return 0
	}
	return n
}

// SetThreads sets how many threads one Gemm call (and the trainer's other parallel kernels) may
// use; n <= 0 restores the default.
func SetThreads(n int) {
	threadsSet.Store(int64(max(n, 0)))
}

// Threads returns the current thread count: SetThreads's value, else the env BPO_THREADS, else
// runtime.GOMAXPROCS(0) (which since Go 1.25 already follows the container's cgroup CPU limit, so
// a pod's resources.limits.cpu sets it).
func Threads() int {
	if n := threadsSet.Load(); n > 0 {
		return int(n)
	}
	if n := envThreads(); n > 0 {
		return n
	}
	return runtime.GOMAXPROCS(0)
}

// The semaphore bounding concurrent backend calls process-wide. It is rebuilt when Threads()
// changes; a call releases the slot to the channel it took it from, so a resize never blocks or
// leaks (for a moment the old and new channels together may admit more calls).
var sem atomic.Pointer[chan struct{}]

// maxCalls, when positive, caps the semaphore whatever Threads() says: OpenBLAS serves at most
// its MAX_THREADS (64 for Debian's build) concurrent callers from its buffer table.
var maxCalls atomic.Int64

func semSize() int {
	n := Threads()
	if c := int(maxCalls.Load()); c > 0 {
		n = min(n, c)
	}
	return n
}

func acquire() chan struct{} {
	n := semSize()
	s := sem.Load()
	for s == nil || cap(*s) != n {
		ns := make(chan struct{}, n)
		if sem.CompareAndSwap(s, &ns) {
			s = &ns
			break
		}
		s = sem.Load()
		n = semSize()
	}
	*s <- struct{}{}
	return *s
}

func release(s chan struct{}) { <-s }

// Gemm computes C = alpha·op(A)·op(B) + beta·C on row-major matrices: op(A) is m×k (A is k×m when tA),
// op(B) is k×n (B is n×k when tB), C is m×n; lda, ldb, ldc are row strides. beta == 0 means C is
// overwritten (its old contents, even NaN, are ignored), as in BLAS.
//
// It panics, before touching any memory, on negative sizes, strides shorter than a row, or slices
// too short for the sizes and strides. With k == 0 or alpha == 0, A and B are not read and
// C = beta·C.
func Gemm[F float32 | float64](tA, tB bool, m, n, k int, alpha F, a []F, lda int, b []F, ldb int, beta F, c []F, ldc int) {
	checkArgs(tA, tB, m, n, k, lda, ldb, ldc, len(a), len(b), len(c))
	if m == 0 || n == 0 {
		return
	}
	if k == 0 || alpha == 0 {
		scaleC(m, n, beta, c, ldc)
		return
	}
	e := current()
	var kern gemmFunc[F]
	switch any(alpha).(type) {
	case float32:
		kern = any(e.sgemm).(gemmFunc[F])
	case float64:
		kern = any(e.dgemm).(gemmFunc[F])
	}
	run(kern, e.minBlockWork, tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// run splits the call into row blocks (split) and runs them, at most Threads() at once process-wide.
func run[F float32 | float64](kern gemmFunc[F], minWork float64, tA, tB bool, m, n, k int, alpha F, a []F, lda int, b []F, ldb int, beta F, c []F, ldc int) {
	block := func(r0, r1 int) {
		var ab []F
		if tA {
			ab = a[r0:] // A is k×m: the block is columns r0..r1
		} else {
			ab = a[r0*lda:]
		}
		s := acquire()
		defer release(s)
		kern(tA, tB, r1-r0, n, k, alpha, ab, lda, b, ldb, beta, c[r0*ldc:], ldc)
	}
	t := Threads()
	if m <= superRows && splitRows(m, n, k, t, minWork).n == 1 {
		block(0, m) // the common small call: no goroutine, no allocation
		return
	}
	blocks := split(m, n, k, t, minWork)
	workers := min(t, len(blocks))
	var next atomic.Int64
	work := func() {
		for i := int(next.Add(1) - 1); i < len(blocks); i = int(next.Add(1) - 1) {
			block(blocks[i][0], blocks[i][1])
		}
	}
	var wg sync.WaitGroup
	for range workers - 1 {
		wg.Go(work)
	}
	work()
	wg.Wait()
}

// How the rows of C are split, and why the split never changes C.
//
// OpenBLAS's result for one element of C depends on more than its k-sum order: the x86-64 GEMM
// micro-kernels take the rows of (row-major) C in groups (the columns of the column-major problem
// OpenBLAS actually solves) and compute a full group and the leftover rows at the end of a call
// with different instruction sequences. E.g. 0.3.21's Haswell/Zen sgemm kernel
// (sgemm_kernel_8x4_haswell_2.c) runs groups of 12 rows, then 8, 4, 2, 1, and its 4-row path sums
// even and odd k in two accumulators; the level-3 driver also feeds the first panel in chunks of
// 3·GEMM_UNROLL_N rows. Splitting 259 rows at 128 (so rows 120-127 end a call instead of sitting
// inside a 12-group) changed those rows in the last bit: TestDeterministicAcrossThreads caught it
// with boundaries on multiples of 16.
//
// The groups are 12 (Haswell/Zen sgemm), 24 (Haswell/Zen dgemm: N/24 loop, driver chunks of
// 3·8), 24 (SkylakeX sgemm: 24, then 20, 16, ...; driver chunks of 6·4) and 12 (SkylakeX dgemm),
// so block boundaries on multiples of rowAlign = 48 rows put every row in the same group, at the
// same offset, whether or not the call is split; only the last block ends where the whole call
// ends, with the same leftover rows. Two more conditions keep every block on the same code path as
// the whole call:
//   - OpenBLAS's driver also cuts the rows at GEMM_R (an L2-derived count, a multiple of 16 but not
//     always of 48, 65k-105k rows for these cores, 8640 for SkylakeX dgemm): calls are first cut,
//     by shape only, into super-blocks of at most superRows rows, well under those and a multiple of
//     48, and only super-blocks are split by thread count.
//   - On SkylakeX (and Cooperlake, SapphireRapids, which reuse its kernels), 0.3.21 sends small
//     calls to other kernels: sgemm "direct" when alpha=1, beta=0, NN and m·n·k < 28·512·512,
//     and the small-matrix kernels when m·n·k <= 1e6. On those cores a block of a split call has
//     at least 2^23 > 28·512·512 of m·n·k (openblasMinBlockWork), so neither the blocks nor the
//     whole call (larger still) take them. The other x86 cores have no such paths (their
//     small-matrix permit is the generic "return 0"), so they split from 2^21 per block.
//
// The gonum backend sums every element in k order whatever the rows, so for it the split is free.
const (
	rowAlign  = 48
	superRows = 96 * rowAlign // 4608
)

// minBlockRows is the fewest rows of a block.
const minBlockRows = rowAlign

// openblasMinBlockWork is the least m·n·k of one block of a split OpenBLAS call on this core.
//
// Measured on the 2-core Zen3 VM (Haswell core, SGEMM, one call vs two row blocks on two
// threads, best of ~0.6 s, with other jobs on the machine): m·n·k 0.9M and 1.6M (0.4-0.8M a
// block) ran 7% slower split (goroutine, semaphore, and each block re-packing B); 2.1M: 0.97×;
// 4.2M (2048×8×256, 2.1M a block): 1.34×; 4.7M: 1.05×; 7.1M: 1.26×; 17M-134M: 1.44-1.70× when the
// second core was free. So splitting pays from about 2M of work a block: 2^21. The AVX-512 cores
// need 2^23 for determinism (above), which costs little: a 2^23 block takes ~0.2 ms.
func openblasMinBlockWork(core string) float64 {
	switch strings.ToLower(core) {
	case "skylakex", "cooperlake", "sapphirerapids":
		return 1 << 23
	}
	if slowCore(core, true) || slices.Contains([]string{"haswell", "zen"}, strings.ToLower(core)) {
		return 1 << 21
	}
	return 1 << 23 // a core this code does not know: assume small-matrix paths
}

// rowBlocks is the split of rows [0, m) of one super-block: n blocks of whole multiples of
// rowAlign rows (the first extra ones one unit larger), the last also taking the m%rowAlign rest.
type rowBlocks struct {
	n, m, base, extra int // base, extra in units of rowAlign rows
}

func (r rowBlocks) bounds(i int) (int, int) {
	if r.n == 1 {
		return 0, r.m
	}
	start := rowAlign * (i*r.base + min(i, r.extra))
	size := rowAlign * r.base
	if i < r.extra {
		size += rowAlign
	}
	if i == r.n-1 {
		return start, r.m
	}
	return start, start + size
}

// splitRows splits m rows for t threads: as many blocks as t, but each block at least
// minBlockRows rows and minWork of m·n·k, so that a split only happens when every block still
// amortises the goroutine, the semaphore and (OpenBLAS) the re-packing of B that each block does.
func splitRows(m, n, k, t int, minWork float64) rowBlocks {
	one := rowBlocks{n: 1, m: m}
	if t <= 1 || m < 2*minBlockRows {
		return one
	}
	rowsMin := float64(minBlockRows)
	if nk := float64(n) * float64(k); nk > 0 {
		rowsMin = math.Max(rowsMin, math.Ceil(minWork/nk))
	}
	unitsMin := int(math.Ceil(rowsMin / rowAlign))
	units := m / rowAlign
	nb := min(t, units/unitsMin)
	if nb <= 1 {
		return one
	}
	return rowBlocks{n: nb, m: m, base: units / nb, extra: units % nb}
}

// split returns the row blocks [r0, r1) of a call: super-blocks of superRows rows (by shape only),
// each split for t threads by splitRows.
func split(m, n, k, t int, minWork float64) [][2]int {
	var out [][2]int
	for s0 := 0; s0 < m; s0 += superRows {
		rows := min(superRows, m-s0)
		rb := splitRows(rows, n, k, t, minWork)
		for i := range rb.n {
			r0, r1 := rb.bounds(i)
			out = append(out, [2]int{s0 + r0, s0 + r1})
		}
	}
	return out
}

// scaleC sets C = beta·C (C = 0 when beta == 0, whatever C held).
func scaleC[F float32 | float64](m, n int, beta F, c []F, ldc int) {
	if beta == 1 {
		return
	}
	for i := range m {
		row := c[i*ldc : i*ldc+n]
		if beta == 0 {
			clear(row)
			continue
		}
		for j := range row {
			row[j] *= beta
		}
	}
}

// checkArgs panics, BLAS-style, on sizes, strides or slice lengths that do not fit together.
func checkArgs(tA, tB bool, m, n, k, lda, ldb, ldc, la, lb, lc int) {
	if m < 0 || n < 0 || k < 0 {
		panic(fmt.Sprintf("blas.Gemm: negative size m=%d n=%d k=%d", m, n, k))
	}
	// Rows and columns of A, B and C as stored (row-major).
	ar, ac := m, k
	if tA {
		ar, ac = k, m
	}
	br, bc := k, n
	if tB {
		br, bc = n, k
	}
	if lda < max(1, ac) {
		panic(fmt.Sprintf("blas.Gemm: lda=%d < max(1, %d), the row length of A (%d×%d, tA=%v)", lda, ac, ar, ac, tA))
	}
	if ldb < max(1, bc) {
		panic(fmt.Sprintf("blas.Gemm: ldb=%d < max(1, %d), the row length of B (%d×%d, tB=%v)", ldb, bc, br, bc, tB))
	}
	if ldc < max(1, n) {
		panic(fmt.Sprintf("blas.Gemm: ldc=%d < max(1, %d), the row length of C (%d×%d)", ldc, n, m, n))
	}
	if m == 0 || n == 0 {
		return
	}
	need := func(rows, cols, ld int) int {
		if rows == 0 || cols == 0 {
			return 0
		}
		return (rows-1)*ld + cols
	}
	if k > 0 {
		if l := need(ar, ac, lda); la < l {
			panic(fmt.Sprintf("blas.Gemm: len(a)=%d < %d needed by A %d×%d with lda=%d", la, l, ar, ac, lda))
		}
		if l := need(br, bc, ldb); lb < l {
			panic(fmt.Sprintf("blas.Gemm: len(b)=%d < %d needed by B %d×%d with ldb=%d", lb, l, br, bc, ldb))
		}
	}
	if l := need(m, n, ldc); lc < l {
		panic(fmt.Sprintf("blas.Gemm: len(c)=%d < %d needed by C %d×%d with ldc=%d", lc, l, m, n, ldc))
	}
}
