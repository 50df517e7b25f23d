"""Go's math/rand/v2 PCG and Rand.Perm, bit for bit.

The Go train stage draws each epoch's batch order as
rand.New(rand.NewPCG(streamSeed("order", k), epoch)).Perm(len(pairs)) (pipeline/train.go), the
same for every member. An engine that means to reproduce the Go trainer's numbers must draw the
same order, so this file reimplements exactly that much of the Go library (pcg.go: 128-bit LCG
with the DXSM output; rand.go: Shuffle with Lemire's bounded uint64n on 64-bit platforms).
"""
M64 = (1 << 64) - 1
_MUL = (2549297995355413924 << 64) | 4865540595714422341
_INC = (6364136223846793005 << 64) | 1442695040888963407
_CHEAP_MUL = 0xDA942042E4DD58B5


class PCG:
    def __init__(self, seed1, seed2):
        self.state = ((seed1 & M64) << 64) | (seed2 & M64)

    def uint64(self):
        self.state = (self.state * _MUL + _INC) & ((1 << 128) - 1)
        hi, lo = self.state >> 64, self.state & M64
        # DXSM "double xorshift multiply".
        hi ^= hi >> 32
        hi = (hi * _CHEAP_MUL) & M64
        hi ^= hi >> 48
        return (hi * (lo | 1)) & M64

    def uint64n(self, n):
        if n & (n - 1) == 0:  # a power of two: mask
            return self.uint64() & (n - 1)
        prod = self.uint64() * n
        hi, lo = prod >> 64, prod & M64
        if lo < n:
            thresh = (-n & M64) % n
            while lo < thresh:
                prod = self.uint64() * n
                hi, lo = prod >> 64, prod & M64
        return hi

    def perm(self, n):
        p = list(range(n))
        for i in range(n - 1, 0, -1):  # Fisher-Yates, as Rand.Shuffle
            j = self.uint64n(i + 1)
            p[i], p[j] = p[j], p[i]
        return p


def stream_seed(run_seed, purpose, k):
    """pipeline.Env.streamSeed: an independent random stream per (run seed, purpose, phase)."""
    h = (run_seed ^ 0x9E3779B97F4A7C15) & M64
    for c in purpose.encode():
        h = ((h ^ c) * 0x100000001B3) & M64
    return h ^ ((k * 0xBF58476D1CE4E5B9) & M64)


if __name__ == "__main__":
    # `gorand.py SEED1 SEED2 N` prints the permutation, so a Go test can compare it with Go's.
    import sys
    s1, s2, n = (int(a) for a in sys.argv[1:4])
    print(" ".join(map(str, PCG(s1, s2).perm(n))))
