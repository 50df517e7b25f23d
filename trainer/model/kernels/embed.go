package kernels

// Embed writes out[n] = wte[tok[n]] + wpe[pos[n]] for rows of width d. Token and position ids
// must be in range (callers check them, with errors that name the input).
func Embed[F Float](out, wte, wpe []F, tok, pos []int, d int) {
	for n, t := range tok {
		p := pos[n]
		row, e, q := out[n*d:(n+1)*d], wte[t*d:(t+1)*d], wpe[p*d:(p+1)*d]
		for j := range row {
			row[j] = e[j] + q[j]
		}
	}
}

// EmbedBackward is the backward of a table lookup: it adds row n of dy into row idx[n] of
// dtable (which it does not clear), in row order. Called once with the token ids (d wte) and once
// with the position ids (d wpe).
func EmbedBackward[F Float](dtable, dy []F, idx []int, d int) {
	for n, r := range idx {
		row, g := dtable[r*d:(r+1)*d], dy[n*d:(n+1)*d]
		for j := range row {
			row[j] += g[j]
		}
	}
}
