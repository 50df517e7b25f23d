package blas

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// backends runs f under every backend available in this process (gonum always, openblas when
// it loads), restoring the process's own backend afterwards.
func backends(t *testing.T, f func(t *testing.T)) {
	t.Helper()
	for _, name := range []string{"openblas", "gonum"} {
		t.Run(name, func(t *testing.T) {
			restore, ok := useEngine(name)
			if !ok {
				t.Skipf("%s not available: %s", name, Backend().Reason)
			}
			defer restore()
			f(t)
		})
	}
}

// withThreads sets Threads() for the rest of the test.
func withThreads(t testing.TB, n int) {
	prev := threadsSet.Load()
	SetThreads(n)
	t.Cleanup(func() { threadsSet.Store(prev) })
}

// randSlice returns n values uniform in [-1, 1) (exactly representable in F).
func randSlice[F float32 | float64](rng *rand.Rand, n int) []F {
	s := make([]F, n)
	for i := range s {
		s[i] = F(2*rng.Float64() - 1)
	}
	return s
}

// reference computes alpha·op(A)·op(B) + beta·C in float64 and the scale of each element
// (|alpha|·Σ|a||b| + |beta·c|) for the tolerance; beta == 0 ignores C.
func reference[F float32 | float64](tA, tB bool, m, n, k int, alpha F, a []F, lda int, b []F, ldb int, beta F, c []F, ldc int) (want, scale []float64) {
	want, scale = make([]float64, m*n), make([]float64, m*n)
	for i := range m {
		for j := range n {
			var s, abs float64
			for l := range k {
				var av, bv F
				if tA {
					av = a[l*lda+i]
				} else {
					av = a[i*lda+l]
				}
				if tB {
					bv = b[j*ldb+l]
				} else {
					bv = b[l*ldb+j]
				}
				s += float64(av) * float64(bv)
				abs += math.Abs(float64(av) * float64(bv))
			}
			w := float64(alpha) * s
			sc := math.Abs(float64(alpha)) * abs
			if beta != 0 {
				w += float64(beta) * float64(c[i*ldc+j])
				sc += math.Abs(float64(beta) * float64(c[i*ldc+j]))
			}
			want[i*n+j], scale[i*n+j] = w, sc
		}
	}
	return want, scale
}

type shape struct{ m, n, k int }

// checkGemm runs gemm on random inputs with padded strides and compares with the reference.
// C starts as NaN when beta == 0 (it must be ignored) and the padding of C must stay untouched.
func checkGemm[F float32 | float64](t *testing.T, gemm gemmFunc[F], tA, tB bool, s shape, alpha, beta F, tol float64, rng *rand.Rand) {
	t.Helper()
	m, n, k := s.m, s.n, s.k
	ar, ac := m, k
	if tA {
		ar, ac = k, m
	}
	br, bc := k, n
	if tB {
		br, bc = n, k
	}
	lda, ldb, ldc := ac+3, bc+1, n+2
	a := randSlice[F](rng, max(ar*lda, 1))
	b := randSlice[F](rng, max(br*ldb, 1))
	c := randSlice[F](rng, max(m*ldc, 1))
	if beta == 0 {
		for i := range m {
			for j := range n {
				c[i*ldc+j] = F(math.NaN())
			}
		}
	}
	c0 := append([]F(nil), c...)
	want, scale := reference(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
	gemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
	bad := 0
	for i := range m {
		for j := range ldc {
			got := float64(c[i*ldc+j])
			if j >= n {
				if math.Float64bits(got) != math.Float64bits(float64(c0[i*ldc+j])) {
					t.Fatalf("%v: C padding [%d,%d] changed", s, i, j)
				}
				continue
			}
			w := want[i*n+j]
			if d := math.Abs(got - w); !(d <= tol*math.Sqrt(float64(max(k, 1)))*scale[i*n+j]+1e-300) {
				if bad++; bad <= 3 {
					t.Errorf("tA=%v tB=%v %dx%dx%d alpha=%v beta=%v: C[%d,%d]=%v, want %v (|diff| %.3g, scale %.3g)",
						tA, tB, m, n, k, alpha, beta, i, j, got, w, d, scale[i*n+j])
				}
			}
		}
	}
}

var shapes = []shape{
	{1, 1, 1}, {1, 7, 5}, {5, 1, 9}, {3, 5, 7}, {17, 13, 29}, {33, 65, 64}, {70, 67, 131},
	{4, 3, 0}, // k = 0: C = beta·C
}

var scalars = []float64{0, 1, 0.5, -2}

func TestGemmMatchesReference(t *testing.T) {
	backends(t, func(t *testing.T) {
		for _, tr := range [][2]bool{{false, false}, {true, false}, {false, true}, {true, true}} {
			rng := rand.New(rand.NewPCG(1, 2))
			for _, s := range shapes {
				for _, alpha := range scalars {
					for _, beta := range scalars {
						checkGemm(t, Gemm[float32], tr[0], tr[1], s, float32(alpha), float32(beta), 1e-5, rng)
						checkGemm(t, Gemm[float64], tr[0], tr[1], s, alpha, beta, 1e-12, rng)
					}
				}
			}
			// A shape that Gemm splits across threads (and through every kernel block path).
			withThreads(t, 3)
			big := shape{291, 173, 359}
			if len(split(big.m, big.n, big.k, 3, current().minBlockWork)) < 2 {
				t.Fatalf("%v is not split; the test wants a split call", big)
			}
			for _, ab := range [][2]float64{{1, 0}, {-2, 0.5}} {
				checkGemm(t, Gemm[float32], tr[0], tr[1], big, float32(ab[0]), float32(ab[1]), 1e-5, rng)
				checkGemm(t, Gemm[float64], tr[0], tr[1], big, ab[0], ab[1], 1e-12, rng)
			}
			withThreads(t, 0)
		}
	})
}

// TestKernels checks each single-threaded kernel directly (the routing may not send every shape
// to each of them).
func TestKernels(t *testing.T) {
	kernels := map[string]gemmFunc[float32]{"go": goSgemm, "gonum": gonumSgemm}
	if e, err := openBLAS(); err == nil {
		kernels["openblas"] = e.sgemm
	}
	for name, kern := range kernels {
		t.Run(name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(3, 4))
			for _, tr := range [][2]bool{{false, false}, {true, false}, {false, true}, {true, true}} {
				for _, s := range append(shapes[:len(shapes)-1:len(shapes)-1], shape{128, 32, 128}, shape{2, 300, 70}) {
					for _, ab := range [][2]float32{{1, 0}, {0.5, -2}, {-2, 1}} {
						checkGemm(t, kern, tr[0], tr[1], s, ab[0], ab[1], 1e-5, rng)
					}
				}
			}
		})
	}
	t.Run("gonum/float64", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(5, 6))
		for _, tr := range [][2]bool{{false, false}, {true, false}, {false, true}, {true, true}} {
			checkGemm(t, gonumDgemm, tr[0], tr[1], shape{70, 131, 67}, 0.5, -2, 1e-12, rng)
		}
	})
}

// TestDeterministicAcrossThreads: C is bit-identical whatever Threads() is, for every backend,
// both types, all four transpose combinations, odd sizes that Gemm does split.
func TestDeterministicAcrossThreads(t *testing.T) {
	backends(t, func(t *testing.T) {
		e := current()
		t.Logf("core=%s", e.coreType)
		sizes := []shape{{515, 263, 301}, {1001, 97, 389}, {307, 1025, 129}, {4700, 67, 131}}
		if testing.Short() || e.name == "gonum" { // gonum sums in k order by construction; it is slow
			sizes = sizes[:2]
		}
		for _, s := range sizes {
			if n := len(split(s.m, s.n, s.k, 3, e.minBlockWork)); n < 3 {
				t.Fatalf("%v splits into %d blocks with 3 threads; the test wants 3", s, n)
			}
			for _, tr := range [][2]bool{{false, false}, {true, false}, {false, true}, {true, true}} {
				for _, ab := range [][2]float64{{1, 0}, {0.5, -2}} {
					name := fmt.Sprintf("%dx%dx%d/tA=%v/tB=%v/alpha=%v/beta=%v", s.m, s.n, s.k, tr[0], tr[1], ab[0], ab[1])
					sameAcrossThreads(t, name+"/float32", tr[0], tr[1], s, float32(ab[0]), float32(ab[1]))
					sameAcrossThreads(t, name+"/float64", tr[0], tr[1], s, ab[0], ab[1])
				}
			}
		}
	})
}

// TestDeterministicOtherCores runs TestDeterministicAcrossThreads/openblas again under each
// other OpenBLAS core type this CPU can execute (OPENBLAS_CORETYPE in a child process): their
// kernels group rows differently, and SkylakeX (on a CPU with AVX-512) is the production one.
func TestDeterministicOtherCores(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	if os.Getenv("BPO_BLAS_TEST_CHILD") != "" {
		t.Skip("child process")
	}
	e, err := openBLAS()
	if err != nil {
		t.Skipf("no OpenBLAS: %v", err)
	}
	cores := []string{"Haswell", "Zen", "Sandybridge", "Prescott"}
	if chooseCoreType(cpuFeatures()) == "SkylakeX" {
		cores = append(cores, "SkylakeX")
	} else if !hasAVX2() {
		cores = []string{"Prescott"}
	}
	for _, core := range cores {
		if strings.EqualFold(core, e.coreType) {
			continue // the parent's own run covers it
		}
		t.Run(core, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(os.Args[0], "-test.run=^TestDeterministicAcrossThreads$/^openblas$", "-test.count=1", "-test.v")
			cmd.Env = append(slices.DeleteFunc(os.Environ(), func(e string) bool {
				return strings.HasPrefix(e, "OPENBLAS_CORETYPE=") || strings.HasPrefix(e, "BPO_BLAS=")
			}), "OPENBLAS_CORETYPE="+core, "BPO_BLAS_TEST_CHILD=1")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("OPENBLAS_CORETYPE=%s: %v\n%s", core, err, out)
			}
			if !strings.Contains(string(out), "core="+core) {
				t.Fatalf("OPENBLAS_CORETYPE=%s did not run that core:\n%s", core, out)
			}
		})
	}
}

func sameAcrossThreads[F float32 | float64](t *testing.T, name string, tA, tB bool, s shape, alpha, beta F) {
	t.Helper()
	rng := rand.New(rand.NewPCG(uint64(s.m), uint64(s.n)))
	ar, ac := s.m, s.k
	if tA {
		ar, ac = s.k, s.m
	}
	br, bc := s.k, s.n
	if tB {
		br, bc = s.n, s.k
	}
	a, b, c0 := randSlice[F](rng, ar*ac), randSlice[F](rng, br*bc), randSlice[F](rng, s.m*s.n)
	var first []F
	for _, threads := range []int{1, 2, 3, 4} {
		withThreads(t, threads)
		c := append([]F(nil), c0...)
		Gemm(tA, tB, s.m, s.n, s.k, alpha, a, ac, b, bc, beta, c, s.n)
		if first == nil {
			first = c
			continue
		}
		for i := range c {
			if math.Float64bits(float64(c[i])) != math.Float64bits(float64(first[i])) {
				t.Errorf("%s: threads=%d C[%d,%d]=%v, threads=1 gave %v", name, threads, i/s.n, i%s.n, c[i], first[i])
				break
			}
		}
	}
	withThreads(t, 0)
}

func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		m, n, k, t int
		minWork    float64
		want       int
	}{
		{2048, 2048, 2048, 2, 1 << 23, 2},
		{2048, 2048, 2048, 1, 1 << 23, 1},
		{2048, 2048, 2048, 64, 1 << 23, 42}, // 2048/48 units
		{95, 4096, 4096, 8, 1 << 23, 1},     // under 2·minBlockRows rows
		{96, 4096, 4096, 8, 1 << 23, 2},
		{1000, 100, 100, 4, 1 << 23, 1}, // 1e7 of work: one block's worth
		{1000, 100, 100, 4, 1 << 20, 4},
		{10000, 64, 64, 1, 1 << 23, 3},   // super-blocks of 4608 rows whatever the threads
		{10000, 64, 64, 8, 1 << 23, 5},   // 2+2+1: each full super-block has 2 blocks' worth
		{10000, 512, 512, 2, 1 << 23, 6}, // each super-block in two
	} {
		if got := len(split(tc.m, tc.n, tc.k, tc.t, tc.minWork)); got != tc.want {
			t.Errorf("split(%d,%d,%d, t=%d) = %d blocks, want %d", tc.m, tc.n, tc.k, tc.t, got, tc.want)
		}
	}
	// Blocks tile the rows exactly, boundaries on multiples of rowAlign, none across a super-block
	// boundary, at most t per super-block; in a super-block that is split, every block has at
	// least max(minBlockRows, minWork/(n·k)) rows and all but the last are within rowAlign rows of
	// each other.
	for m := 1; m < 12000; m += 37 {
		for _, nk := range []int{1, 1000, 40000, 300000} {
			for th := 1; th <= 9; th++ {
				blocks := split(m, nk, 1, th, 1<<20)
				next := 0
				per := map[int][]int{} // super-block -> block sizes
				for i, bl := range blocks {
					r0, r1 := bl[0], bl[1]
					if r0 != next || r1 <= r0 || r0%rowAlign != 0 || r0/superRows != (r1-1)/superRows {
						t.Fatalf("split(m=%d, nk=%d, t=%d): block %d = [%d,%d) after %d", m, nk, th, i, r0, r1, next)
					}
					per[r0/superRows] = append(per[r0/superRows], r1-r0)
					next = r1
				}
				if next != m {
					t.Fatalf("split(m=%d, nk=%d, t=%d) ends at %d", m, nk, th, next)
				}
				for sb, sizes := range per {
					if len(sizes) > th {
						t.Fatalf("split(m=%d, nk=%d, t=%d): super-block %d has %d blocks", m, nk, th, sb, len(sizes))
					}
					if len(sizes) == 1 {
						continue
					}
					lo, hi := slices.Min(sizes[:len(sizes)-1]), slices.Max(sizes[:len(sizes)-1])
					if lo < minBlockRows || float64(slices.Min(sizes)*nk) < 1<<20 || hi-lo > rowAlign || sizes[len(sizes)-1] < lo-rowAlign {
						t.Fatalf("split(m=%d, nk=%d, t=%d): super-block %d sizes %v", m, nk, th, sb, sizes)
					}
				}
			}
		}
	}
}

// TestSemaphore: however many goroutines call, at most Threads() backend calls run at once.
func TestSemaphore(t *testing.T) {
	withThreads(t, 2)
	var running, peak atomic.Int32
	kern := func(tA, tB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
		r := running.Add(1)
		for p := peak.Load(); r > p && !peak.CompareAndSwap(p, r); p = peak.Load() {
		}
		for range 2000 {
			runtime.Gosched()
		}
		running.Add(-1)
	}
	m, n, k := 256, 256, 256
	a, b, c := make([]float32, m*k), make([]float32, k*n), make([]float32, m*n)
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			for range 5 {
				run(kern, 1<<20, false, false, m, n, k, 1, a, k, b, n, 0, append([]float32(nil), c...), n)
			}
		})
	}
	wg.Wait()
	if p := peak.Load(); p > 2 || p < 1 {
		t.Errorf("%d backend calls ran at once with Threads()=2", p)
	}
}

func TestThreads(t *testing.T) {
	withThreads(t, 5)
	if got := Threads(); got != 5 {
		t.Errorf("SetThreads(5): Threads()=%d", got)
	}
	SetThreads(-1)
	want := runtime.GOMAXPROCS(0)
	if n := envThreads(); n > 0 {
		want = n
	}
	if got := Threads(); got != want {
		t.Errorf("SetThreads(-1): Threads()=%d, want the default %d", got, want)
	}
	for v, want := range map[string]int{"": 0, "3": 3, " 8 ": 8, "0": 0, "-2": 0, "four": 0} {
		if got := parseThreads(v); got != want {
			t.Errorf("BPO_THREADS=%q: %d, want %d", v, got, want)
		}
	}
	if Backend().Threads != Threads() {
		t.Errorf("Backend().Threads=%d, Threads()=%d", Backend().Threads, Threads())
	}
}

func TestArgumentChecks(t *testing.T) {
	s := make([]float32, 100)
	for _, tc := range []struct {
		name, want string
		f          func()
	}{
		{"negative", "negative size", func() { Gemm(false, false, -1, 2, 2, 1, s, 2, s, 2, 0, s, 2) }},
		{"lda", "lda=2 < max(1, 3)", func() { Gemm(false, false, 2, 2, 3, 1, s, 2, s, 2, 0, s, 2) }},
		{"lda tA", "lda=2 < max(1, 3)", func() { Gemm(true, false, 3, 2, 2, 1, s, 2, s, 2, 0, s, 2) }},
		{"ldb", "ldb=1 < max(1, 2)", func() { Gemm(false, false, 2, 2, 2, 1, s, 2, s, 1, 0, s, 2) }},
		{"ldb tB", "ldb=2 < max(1, 3)", func() { Gemm(false, true, 2, 2, 3, 1, s, 3, s, 2, 0, s, 2) }},
		{"ldc", "ldc=1 < max(1, 2)", func() { Gemm(false, false, 2, 2, 2, 1, s, 2, s, 2, 0, s, 1) }},
		{"short a", "len(a)=100 < 110", func() { Gemm(false, false, 11, 2, 10, 1, s, 10, s, 2, 0, make([]float32, 22), 2) }},
		{"short b", "len(b)=100 < 110", func() { Gemm(false, false, 2, 10, 11, 1, s, 11, s, 10, 0, s, 10) }},
		{"short c", "len(c)=3 < 4", func() { Gemm(false, false, 2, 2, 2, 1, s, 2, s, 2, 0, s[:3], 2) }},
		{"short c k=0", "len(c)=3 < 4", func() { Gemm(false, false, 2, 2, 0, 1, nil, 1, nil, 2, 0, s[:3], 2) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				r := recover()
				if msg, _ := r.(string); !strings.Contains(msg, tc.want) {
					t.Errorf("panic %v, want one containing %q", r, tc.want)
				}
			}()
			tc.f()
		})
	}
	// Empty and k = 0 calls read nothing of A and B.
	Gemm[float64](false, false, 0, 5, 5, 1, nil, 5, nil, 5, 0, nil, 5)
	Gemm[float64](false, false, 5, 0, 5, 1, nil, 5, nil, 1, 0, nil, 1)
	c := []float64{math.NaN(), 2, 3, 4}
	Gemm(false, false, 2, 2, 0, 1, nil, 1, nil, 2, 0, c, 2)
	if c[0] != 0 || c[3] != 0 {
		t.Errorf("k=0, beta=0: C=%v, want zeros", c)
	}
}

func TestChooseCoreType(t *testing.T) {
	avx512 := features{avx2: true, fma: true, avx512f: true, avx512bw: true, avx512dq: true, avx512vl: true}
	for _, tc := range []struct {
		f    features
		want string
	}{
		{avx512, "SkylakeX"},
		{features{avx2: true, fma: true, avx512f: true}, "Haswell"}, // AVX-512F alone (Knights Landing)
		{features{avx2: true, fma: true}, "Haswell"},
		{features{avx2: true}, ""},
		{features{}, ""},
	} {
		if got := chooseCoreType(tc.f); got != tc.want {
			t.Errorf("chooseCoreType(%+v) = %q, want %q", tc.f, got, tc.want)
		}
	}
	if !slowCore("Prescott", true) || !slowCore("core2", true) || slowCore("Prescott", false) ||
		slowCore("Haswell", true) || slowCore("Zen", true) || slowCore("SkylakeX", true) || slowCore("Cooperlake", true) {
		t.Error("slowCore misclassifies")
	}
}

// TestRequireOpenBLAS fails, when BPO_REQUIRE_OPENBLAS=1 (CI sets it), unless the process runs
// OpenBLAS on fast kernels; otherwise it logs the backend.
func TestRequireOpenBLAS(t *testing.T) {
	info := Backend()
	t.Logf("backend %+v (CPU AVX2+FMA %v, AVX-512 %v)", info, hasAVX2(), chooseCoreType(cpuFeatures()) == "SkylakeX")
	if os.Getenv("BPO_REQUIRE_OPENBLAS") != "1" {
		t.Skip("BPO_REQUIRE_OPENBLAS is not 1")
	}
	if !cgoBuild {
		t.Skip("built without cgo: gonum is the only backend (the requirement is for cgo builds)")
	}
	if info.Name != "openblas" {
		t.Fatalf("backend %s, want openblas: %s", info.Name, info.Reason)
	}
	if slowCore(info.CoreType, hasAVX2()) {
		t.Fatalf("OpenBLAS core %q is a generic slow one on a CPU with AVX2: %s", info.CoreType, info.Reason)
	}
	if ct := chooseCoreType(cpuFeatures()); ct != "" && !strings.Contains(info.Reason, "(user's)") && !strings.EqualFold(info.CoreType, ct) {
		t.Errorf("OpenBLAS core %q, but bpo set OPENBLAS_CORETYPE=%s", info.CoreType, ct)
	}
}

func TestPeak(t *testing.T) {
	g := Peak(0.2)
	if math.IsNaN(g) || math.IsInf(g, 0) || g <= 0 {
		t.Fatalf("Peak = %v", g)
	}
	t.Logf("%s %s, %d threads: %.1f GFLOP/s", Backend().Name, Backend().CoreType, Threads(), g)
}
