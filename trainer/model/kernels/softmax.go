package kernels

import "math"

// LogSumExp returns log Σ exp(row), max-subtracted, summed in float64.
func LogSumExp[F Float](row []F) float64 {
	m := math.Inf(-1)
	for _, v := range row {
		m = max(m, float64(v))
	}
	var z float64
	exp := expFunc[F]()
	for _, v := range row {
		z += exp(float64(v) - m)
	}
	return m + math.Log(z)
}

// LogSoftmaxAt returns log softmax(row)[t].
func LogSoftmaxAt[F Float](row []F, t int) float64 {
	return float64(row[t]) - LogSumExp(row)
}

// LogSoftmaxBackward writes d = c·(softmax(row) − onehot(t)): c times the gradient of
// −log softmax(row)[t] with respect to row, given row's log-sum-exp lse.
func LogSoftmaxBackward[F Float](d, row []F, lse float64, t int, c float64) {
	exp := expFunc[F]()
	for j, v := range row {
		d[j] = F(c * exp(float64(v)-lse))
	}
	d[t] -= F(c)
}

// SoftmaxWeights writes the unnormalised softmax weights p_i = exp((row_i − top)·scale) of float64
// logits (top their maximum, scale the inverse temperature) and returns their sum, for samplers.
// The exponential is expNeg's in either precision (1e-8 relative): sampling needs no more, and
// libm's exp would cost as much as the model's last layer.
func SoftmaxWeights(p, row []float64, top, scale float64) float64 {
	var sum float64
	for i, l := range row {
		p[i] = expNeg((l - top) * scale)
		sum += p[i]
	}
	return sum
}
