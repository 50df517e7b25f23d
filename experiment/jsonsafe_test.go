package experiment

import (
	"encoding/json"
	"math"
	"reflect"
	"testing"
)

func TestJSONSafeWritesNaNAsNull(t *testing.T) {
	type inner struct {
		Std  float64 `json:"std"`
		Skip float64 `json:"-"`
	}
	v := struct {
		Mean  float64            `json:"mean"`
		In    []inner            `json:"in"`
		By    map[string]float64 `json:"by,omitempty"`
		Empty string             `json:"empty,omitempty"`
	}{Mean: 0.5, In: []inner{{Std: math.NaN()}}, By: map[string]float64{"x": math.Inf(1)}}
	data, err := json.Marshal(jsonSafe(reflect.ValueOf(v)))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(data), `{"by":{"x":null},"in":[{"std":null}],"mean":0.5}`; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}
