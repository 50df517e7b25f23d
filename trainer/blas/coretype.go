package blas

import (
	"strings"

	"golang.org/x/sys/cpu"
)

// The OpenBLAS core type (its kernel set), chosen before the library loads.
//
// Debian's OpenBLAS 0.3.21 is a DYNAMIC_ARCH build that picks its kernels from the CPU model in
// its constructor, and does not know every new model: an Intel family 6 model 207 with AVX-512
// gets "Prescott" (SSE3 kernels, ~62 GFLOP/s SGEMM instead of 240-300). The constructor honours
// OPENBLAS_CORETYPE, so unless the user set it, the binary sets it from the CPU's features:
//
//   - AVX512F+BW+DQ+VL: "SkylakeX" (the AVX-512 kernels; 0.3.21's OPENBLAS_CORETYPE accepts no
//     later name, and its Cooperlake differs only in bf16 routines).
//   - else AVX2+FMA: "Haswell". On AMD the library's own pick is "Zen", which in 0.3.21 has the
//     very same s/dgemm kernels (sgemm_kernel_8x4_haswell_2.c, dgemm_kernel_4x8_haswell.S) and
//     blocking (param.h: SGEMM P=Q=320, DGEMM P=512 Q=256), and only swaps Haswell's AVX2 packing
//     and beta routines (s/dgemm_ncopy_*_skylakex.c, *_beta_skylakex.c) for generic C ones; the
//     results are bit-identical. Measured here (2-core AMD EPYC Zen3 VM, Debian 0.3.21, SGEMM
//     single-threaded, best of 3-6 s, 4+3 interleaved runs, other jobs on the machine; GFLOP/s):
//     512: Haswell 94.6-96.5, Zen 88.9-93.9; 1024: Haswell 82.6-94.1, Zen 75.0-94.2; 2048:
//     Haswell 52.6-93.9, Zen 55.7-94.2. Best-of: 96.5 vs 93.9, 94.1 vs 94.2, 93.9 vs 94.2: Haswell
//     is never slower beyond the noise, and ~2.5% faster at 512 where packing weighs most.
//   - else nothing: older CPUs are left to the library.
func chooseCoreType(f features) string {
	switch {
	case f.avx512f && f.avx512bw && f.avx512dq && f.avx512vl:
		return "SkylakeX"
	case f.avx2 && f.fma:
		return "Haswell"
	}
	return ""
}

type features struct {
	avx2, fma, avx512f, avx512bw, avx512dq, avx512vl bool
}

// cpuFeatures reads the CPU's features (golang.org/x/sys/cpu checks the OS enables the
// AVX/AVX-512 register state too); all false off x86.
func cpuFeatures() features {
	return features{
		avx2: cpu.X86.HasAVX2, fma: cpu.X86.HasFMA,
		avx512f: cpu.X86.HasAVX512F, avx512bw: cpu.X86.HasAVX512BW,
		avx512dq: cpu.X86.HasAVX512DQ, avx512vl: cpu.X86.HasAVX512VL,
	}
}

func hasAVX2() bool { return cpu.X86.HasAVX2 && cpu.X86.HasFMA }

// slowCores are OpenBLAS 0.3.21's core names (driver/others/dynamic.c, corename[]) whose GEMM
// kernels predate AVX2: on a CPU with AVX2 they are the silent slow path. "Unknown" is what the
// library reports when it matched no core.
var slowCores = []string{
	"Unknown", "Katmai", "Coppermine", "Northwood", "Prescott", "Banias", "Atom", "Core2",
	"Penryn", "Dunnington", "Nehalem", "Athlon", "Opteron", "Opteron_SSE3", "Barcelona", "Nano",
	"Bobcat", "Sandybridge", "Bulldozer", "Piledriver", "Steamroller", "Excavator",
}

// slowCore reports whether OpenBLAS's core is a generic, pre-AVX2 one while the CPU has AVX2+FMA.
func slowCore(core string, cpuHasAVX2 bool) bool {
	if !cpuHasAVX2 {
		return false
	}
	core = strings.TrimSpace(core)
	for _, s := range slowCores {
		if strings.EqualFold(core, s) {
			return true
		}
	}
	return false
}
