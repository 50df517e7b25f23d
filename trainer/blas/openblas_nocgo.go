//go:build !cgo

package blas

import "errors"

// Without cgo there is no dlopen: the gonum backend is the only one.
func openBLAS() (*engine, error) { return nil, errors.New("cgo disabled") }

const cgoBuild = false
