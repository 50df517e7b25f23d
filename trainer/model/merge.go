package model

import (
	"fmt"
	"slices"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
)

// Clone returns a deep copy of the weights.
func (w *Weights) Clone() *Weights {
	c := &Weights{Config: w.Config, Tensors: make(map[string]*Tensor, len(w.Tensors))}
	c.Config.Architectures = append([]string(nil), w.Config.Architectures...)
	for k, t := range w.Tensors {
		c.Tensors[k] = t.Clone()
	}
	return c
}

// Clone returns a deep copy of the adapter.
func (a *Adapter) Clone() *Adapter {
	c := &Adapter{Rank: a.Rank, Alpha: a.Alpha, Tensors: make(map[string]*Tensor, len(a.Tensors))}
	for k, t := range a.Tensors {
		c.Tensors[k] = t.Clone()
	}
	return c
}

// Delta returns the dense update (Alpha/Rank)·A·B [in, out] of one target projection
// "h.N.<target>" (e.g. "h.0.attn.c_attn"), or nil if the adapter does not carry it.
func (a *Adapter) Delta(prefix string) *Tensor {
	A, B := a.Tensors[prefix+".lora_A"], a.Tensors[prefix+".lora_B"]
	if A == nil || B == nil {
		return nil
	}
	d := NewTensor(A.Shape[0], B.Shape[1])
	mergeAddAB(d, A, B, a.Scale())
	return d
}

// mergeAddAB does dst += s·A·B with A [in, r], B [r, out], dst [in, out].
func mergeAddAB(dst, A, B *Tensor, s float64) {
	in, r, out := A.Shape[0], A.Shape[1], B.Shape[1]
	blas64.Gemm(blas.NoTrans, blas.NoTrans, s,
		blas64.General{Rows: in, Cols: r, Stride: r, Data: A.Data},
		blas64.General{Rows: r, Cols: out, Stride: out, Data: B.Data},
		1, blas64.General{Rows: in, Cols: out, Stride: out, Data: dst.Data})
}

// MergeMean returns a dense model equal to base plus the exact mean of the adapters'
// deltas on every target: W + (1/M)·Σ_m (alpha_m/r_m)·A_m·B_m, where M = len(adapters)
// (a member without a given target contributes a zero delta there). This is the mean
// of the products, not the product of averaged factors. base is not modified; with no
// adapters the result is a copy of base. It panics if an adapter does not fit base's
// config (check with (*Adapter).Validate first).
func MergeMean(base *Weights, adapters []*Adapter) *Weights {
	out := base.Clone()
	if len(adapters) == 0 {
		return out
	}
	inv := 1 / float64(len(adapters))
	for m, a := range adapters {
		if err := a.Validate(base.Config); err != nil {
			panic(fmt.Sprintf("model.MergeMean: adapter %d: %v", m, err))
		}
		for _, name := range wioSortedKeys(a.Tensors) {
			const suffix = ".lora_A"
			if len(name) < len(suffix) || name[len(name)-len(suffix):] != suffix {
				continue
			}
			prefix := name[:len(name)-len(suffix)]
			W := out.Tensors[prefix+".weight"]
			mergeAddAB(W, a.Tensors[prefix+".lora_A"], a.Tensors[prefix+".lora_B"], inv*a.Scale())
		}
	}
	return out
}

// ApplyEMA returns (1−alpha)·ref + alpha·merged on every tensor (an exponential moving
// average step of a reference model towards merged). Neither input is modified. It
// panics if the two models do not have the same tensors and shapes.
func ApplyEMA(ref, merged *Weights, alpha float64) *Weights {
	if len(ref.Tensors) != len(merged.Tensors) {
		panic(fmt.Sprintf("model.ApplyEMA: ref has %d tensors, merged has %d", len(ref.Tensors), len(merged.Tensors)))
	}
	out := &Weights{Config: ref.Config, Tensors: make(map[string]*Tensor, len(ref.Tensors))}
	out.Config.Architectures = append([]string(nil), ref.Config.Architectures...)
	for name, r := range ref.Tensors {
		m := merged.Tensors[name]
		if m == nil || !slices.Equal(r.Shape, m.Shape) || len(r.Data) != len(m.Data) {
			panic(fmt.Sprintf("model.ApplyEMA: tensor %s differs in presence or shape between ref and merged", name))
		}
		t := &Tensor{Shape: append([]int(nil), r.Shape...), Data: make([]float64, len(r.Data))}
		for i := range t.Data {
			t.Data[i] = (1-alpha)*r.Data[i] + alpha*m.Data[i]
		}
		out.Tensors[name] = t
	}
	return out
}
