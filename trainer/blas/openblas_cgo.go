//go:build cgo

package blas

/*
#cgo LDFLAGS: -ldl
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <limits.h>
#include <stdlib.h>

// The cblas prototypes of an LP64 OpenBLAS (blasint is int), called through pointers found with
// dlsym, so the build needs neither OpenBLAS nor its headers.
typedef void (*bpo_sgemm_t)(int order, int ta, int tb, int m, int n, int k, float alpha,
	const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);
typedef void (*bpo_dgemm_t)(int order, int ta, int tb, int m, int n, int k, double alpha,
	const double *a, int lda, const double *b, int ldb, double beta, double *c, int ldc);
typedef void (*bpo_sgemv_t)(int order, int ta, int m, int n, float alpha, const float *a, int lda,
	const float *x, int incx, float beta, float *y, int incy);
typedef void (*bpo_dgemv_t)(int order, int ta, int m, int n, double alpha, const double *a, int lda,
	const double *x, int incx, double beta, double *y, int incy);
typedef void (*bpo_set_threads_t)(int);
typedef char *(*bpo_str_t)(void);

static bpo_sgemm_t bpo_sgemm_p;
static bpo_dgemm_t bpo_dgemm_p;
static bpo_sgemv_t bpo_sgemv_p;
static bpo_dgemv_t bpo_dgemv_p;

enum { bpoRowMajor = 101, bpoNoTrans = 111, bpoTrans = 112 };

// bpo_open dlopens the library and resolves the symbols; it returns NULL on success, else the
// error (dlerror's text, or the missing symbol's name).
// path receives the file the dynamic loader opened, symlinks resolved (PATH_MAX bytes; "" if
// unknown): on Debian it tells the pthread and openmp flavours apart.
static const char *bpo_open(const char *lib, char **corename, char **config, char *path) {
	void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
	if (!h) return dlerror();
	struct link_map *lm = NULL;
	path[0] = 0;
	if (dlinfo(h, RTLD_DI_LINKMAP, &lm) == 0 && lm && lm->l_name && !realpath(lm->l_name, path)) path[0] = 0;
	bpo_sgemm_t s = (bpo_sgemm_t)dlsym(h, "cblas_sgemm");
	bpo_dgemm_t d = (bpo_dgemm_t)dlsym(h, "cblas_dgemm");
	bpo_sgemv_t sv = (bpo_sgemv_t)dlsym(h, "cblas_sgemv");
	bpo_dgemv_t dv = (bpo_dgemv_t)dlsym(h, "cblas_dgemv");
	bpo_set_threads_t t = (bpo_set_threads_t)dlsym(h, "openblas_set_num_threads");
	bpo_str_t cn = (bpo_str_t)dlsym(h, "openblas_get_corename");
	bpo_str_t cf = (bpo_str_t)dlsym(h, "openblas_get_config");
	const char *missing = !s ? "cblas_sgemm" : !d ? "cblas_dgemm" : !sv ? "cblas_sgemv" : !dv ? "cblas_dgemv" :
		!t ? "openblas_set_num_threads" :
		!cn ? "openblas_get_corename" : NULL;
	if (missing) {
		dlclose(h);
		return missing;
	}
	t(1);
	*corename = cn();
	*config = cf ? cf() : NULL;
	bpo_sgemm_p = s;
	bpo_dgemm_p = d;
	bpo_sgemv_p = sv;
	bpo_dgemv_p = dv;
	return NULL;
}

// bpo_sgemv: y = alpha·op(A)·x + beta·y for row-major A (m×n), op = Aᵀ when ta.
static void bpo_sgemv(int ta, int m, int n, float alpha, const float *a, int lda, const float *x,
		int incx, float beta, float *y) {
	bpo_sgemv_p(bpoRowMajor, ta ? bpoTrans : bpoNoTrans, m, n, alpha, a, lda, x, incx, beta, y, 1);
}

static void bpo_dgemv(int ta, int m, int n, double alpha, const double *a, int lda, const double *x,
		int incx, double beta, double *y) {
	bpo_dgemv_p(bpoRowMajor, ta ? bpoTrans : bpoNoTrans, m, n, alpha, a, lda, x, incx, beta, y, 1);
}

static void bpo_sgemm(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
		const float *b, int ldb, float beta, float *c, int ldc) {
	bpo_sgemm_p(bpoRowMajor, ta ? bpoTrans : bpoNoTrans, tb ? bpoTrans : bpoNoTrans, m, n, k,
		alpha, a, lda, b, ldb, beta, c, ldc);
}

static void bpo_dgemm(int ta, int tb, int m, int n, int k, double alpha, const double *a, int lda,
		const double *b, int ldb, double beta, double *c, int ldc) {
	bpo_dgemm_p(bpoRowMajor, ta ? bpoTrans : bpoNoTrans, tb ? bpoTrans : bpoNoTrans, m, n, k,
		alpha, a, lda, b, ldb, beta, c, ldc);
}

static const char *bpo_getenv(const char *k) { return getenv(k); }
*/
import "C"

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"sync"
	"unsafe"
)

const cgoBuild = true

// libNames are tried in order. Debian's libopenblas0-pthread (and libopenblas0-openmp) provide
// libopenblas.so.0 through the alternatives system at /usr/lib/x86_64-linux-gnu/libopenblas.so.0;
// libopenblas.so is the development symlink.
var libNames = []string{"libopenblas.so.0", "libopenblas.so"}

// openBLAS loads OpenBLAS once per process; later calls return the same engine or error.
var openBLAS = sync.OnceValues(loadOpenBLAS)

func loadOpenBLAS() (*engine, error) {
	coreNote := setCoreType()
	var errs []string
	for _, lib := range libNames {
		clib := C.CString(lib)
		var corename, config *C.char
		path := (*C.char)(C.calloc(C.PATH_MAX+1, 1))
		msg := C.bpo_open(clib, &corename, &config, path)
		resolved := C.GoString(path)
		C.free(unsafe.Pointer(path))
		C.free(unsafe.Pointer(clib))
		if msg != nil {
			errs = append(errs, fmt.Sprintf("%s not loaded: %s", lib, C.GoString(msg)))
			continue
		}
		e := &engine{name: "openblas", library: cmp.Or(resolved, lib), coreType: C.GoString(corename),
			sgemm: openblasSgemm, dgemm: openblasDgemm}
		e.minBlockWork = openblasMinBlockWork(e.coreType)
		cfg := C.GoString(config)
		if strings.Contains(cfg, "USE64BITINT") {
			// Never seen under the name libopenblas.so.0 (the ILP64 build is libopenblas64), but a
			// 64-bit-int library would misread every int argument.
			return nil, fmt.Errorf("%s is an ILP64 build (%s); want LP64", lib, cfg)
		}
		if _, v, ok := strings.Cut(cfg, "MAX_THREADS="); ok {
			var n int
			if _, err := fmt.Sscan(v, &n); err == nil && n > 0 {
				maxCalls.Store(int64(n))
			}
		}
		e.reason = "loaded " + lib
		if cfg != "" {
			e.reason += " (" + cfg + ")"
		}
		if coreNote != "" {
			e.reason += "; " + coreNote
		}
		if slowCore(e.coreType, hasAVX2()) {
			msg := fmt.Sprintf("SLOW: OpenBLAS runs its generic %q kernels on a CPU with AVX2 (several times below peak); set OPENBLAS_CORETYPE=Haswell (or SkylakeX with AVX-512), or BPO_BLAS=gonum", e.coreType)
			e.reason += "; " + msg
			warnf("bpo/blas: WARNING: %s", msg)
		}
		return e, nil
	}
	return nil, errors.New(strings.Join(errs, "; "))
}

// setCoreType sets OPENBLAS_CORETYPE from the CPU's features before the library is loaded (its
// constructor reads the variable at dlopen time), unless the user set it. It returns a note for
// Info.Reason.
func setCoreType() string {
	// Set but empty counts as unset: OpenBLAS would reject "" ("Core not found") and fall back.
	if v, ok := os.LookupEnv("OPENBLAS_CORETYPE"); ok && v != "" {
		return "OPENBLAS_CORETYPE=" + v + " (user's)"
	}
	ct := chooseCoreType(cpuFeatures())
	if ct == "" {
		return ""
	}
	// os.Setenv also calls the C library's setenv when cgo is linked in (runtime's
	// syscall_setenv_c), so the constructor's getenv sees it; TestSetenvReachesC checks.
	if err := os.Setenv("OPENBLAS_CORETYPE", ct); err != nil {
		return fmt.Sprintf("setting OPENBLAS_CORETYPE=%s: %v", ct, err)
	}
	return "OPENBLAS_CORETYPE=" + ct + " (set by bpo from the CPU's features)"
}

// cGetenv is the C library's view of an environment variable ("" when unset).
func cGetenv(k string) string {
	ck := C.CString(k)
	defer C.free(unsafe.Pointer(ck))
	return C.GoString(C.bpo_getenv(ck))
}

// fitsC reports whether every size and stride fits OpenBLAS's 32-bit int.
func fitsC(m, n, k, lda, ldb, ldc int) bool {
	return max(m, n, k, lda, ldb, ldc) <= math.MaxInt32
}

func cbool(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

// A one-row product (a decode step's attention, a single row's projection) goes to gemv: 0.3.21's
// gemm packs its operands even for m = 1 and runs several times slower than gemv there. The row of
// C is y, the row of op(A) is x (stride lda when A is transposed, i.e. a column of k×1 A), and
// op(B) becomes the matrix: Bᵀ·x for B k×n, B·x for B n×k (tB).

func openblasSgemm(tA, tB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if !fitsC(m, n, k, lda, ldb, ldc) {
		gonumSgemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	if m == 1 {
		rows, cols, incx := k, n, 1 // B is k×n: y = Bᵀx
		if tB {
			rows, cols = n, k // B is n×k: y = Bx
		}
		if tA {
			incx = lda
		}
		if beta == 0 {
			clear(c[:n]) // BLAS lets gemv scale y by 0: NaN·0 would survive
		}
		C.bpo_sgemv(cbool(!tB), C.int(rows), C.int(cols), C.float(alpha),
			(*C.float)(unsafe.Pointer(unsafe.SliceData(b))), C.int(ldb),
			(*C.float)(unsafe.Pointer(unsafe.SliceData(a))), C.int(incx), C.float(beta),
			(*C.float)(unsafe.Pointer(unsafe.SliceData(c))))
		return
	}
	C.bpo_sgemm(cbool(tA), cbool(tB), C.int(m), C.int(n), C.int(k), C.float(alpha),
		(*C.float)(unsafe.Pointer(unsafe.SliceData(a))), C.int(lda),
		(*C.float)(unsafe.Pointer(unsafe.SliceData(b))), C.int(ldb), C.float(beta),
		(*C.float)(unsafe.Pointer(unsafe.SliceData(c))), C.int(ldc))
}

func openblasDgemm(tA, tB bool, m, n, k int, alpha float64, a []float64, lda int, b []float64, ldb int, beta float64, c []float64, ldc int) {
	if !fitsC(m, n, k, lda, ldb, ldc) {
		gonumDgemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	if m == 1 {
		rows, cols, incx := k, n, 1
		if tB {
			rows, cols = n, k
		}
		if tA {
			incx = lda
		}
		if beta == 0 {
			clear(c[:n])
		}
		C.bpo_dgemv(cbool(!tB), C.int(rows), C.int(cols), C.double(alpha),
			(*C.double)(unsafe.Pointer(unsafe.SliceData(b))), C.int(ldb),
			(*C.double)(unsafe.Pointer(unsafe.SliceData(a))), C.int(incx), C.double(beta),
			(*C.double)(unsafe.Pointer(unsafe.SliceData(c))))
		return
	}
	C.bpo_dgemm(cbool(tA), cbool(tB), C.int(m), C.int(n), C.int(k), C.double(alpha),
		(*C.double)(unsafe.Pointer(unsafe.SliceData(a))), C.int(lda),
		(*C.double)(unsafe.Pointer(unsafe.SliceData(b))), C.int(ldb), C.double(beta),
		(*C.double)(unsafe.Pointer(unsafe.SliceData(c))), C.int(ldc))
}
