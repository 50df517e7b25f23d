package kernels

import "math"

// LayerNorm writes y = (x − mean)·rstd·g + b over the rows of x [rows, d] (biased variance, as
// PyTorch). With mean and rstd not nil it keeps each row's statistics there for the backward.
// The statistics accumulate in float64.
func LayerNorm[F Float](y, x, g, b []F, d int, eps float64, mean, rstd []float64) {
	For(len(x)/d, 64, func(_, lo, hi int) {
		for r := lo; r < hi; r++ {
			xr, yr := x[r*d:(r+1)*d], y[r*d:(r+1)*d]
			mu, rs := meanRstd(xr, eps)
			if mean != nil {
				mean[r], rstd[r] = mu, rs
			}
			for j, v := range xr {
				yr[j] = F((float64(v)-mu)*rs*float64(g[j]) + float64(b[j]))
			}
		}
	})
}

// LayerNormBackward writes dx = rstd·(g∘dy − mean(g∘dy) − x̂·mean(g∘dy∘x̂)) per row, with the
// statistics kept by LayerNorm or, when mean is nil, recomputed from x.
func LayerNormBackward[F Float](dx, x, dy, g []F, d int, eps float64, mean, rstd []float64) {
	For(len(x)/d, 64, func(_, lo, hi int) {
		for r := lo; r < hi; r++ {
			xr, gr, dr := x[r*d:(r+1)*d], dy[r*d:(r+1)*d], dx[r*d:(r+1)*d]
			var mu, rs float64
			if mean != nil {
				mu, rs = mean[r], rstd[r]
			} else {
				mu, rs = meanRstd(xr, eps)
			}
			var m1, m2 float64
			for j, v := range xr {
				gh := float64(gr[j]) * float64(g[j])
				m1 += gh
				m2 += gh * (float64(v) - mu) * rs
			}
			m1 /= float64(d)
			m2 /= float64(d)
			for j, v := range xr {
				dr[j] = F(rs * (float64(gr[j])*float64(g[j]) - m1 - (float64(v)-mu)*rs*m2))
			}
		}
	})
}

// LayerNormParamBackward writes the gain and bias gradients dg = Σ_rows dy∘x̂ and db = Σ_rows dy
// (db may be nil), summed in row order in float64. mean and rstd are LayerNorm's statistics.
func LayerNormParamBackward[F Float](dg, db, x, dy []F, d int, mean, rstd []float64) {
	sg, sb := make([]float64, d), make([]float64, d)
	for r := 0; r < len(x)/d; r++ {
		xr, gr := x[r*d:(r+1)*d], dy[r*d:(r+1)*d]
		mu, rs := mean[r], rstd[r]
		for j, v := range xr {
			sg[j] += float64(gr[j]) * (float64(v) - mu) * rs
			sb[j] += float64(gr[j])
		}
	}
	for j := range sg {
		dg[j] = F(sg[j])
	}
	for j := range db {
		db[j] = F(sb[j])
	}
}

func meanRstd[F Float](x []F, eps float64) (mean, rstd float64) {
	for _, v := range x {
		mean += float64(v)
	}
	mean /= float64(len(x))
	var vr float64
	for _, v := range x {
		c := float64(v) - mean
		vr += c * c
	}
	vr /= float64(len(x))
	return mean, 1 / math.Sqrt(vr+eps)
}
