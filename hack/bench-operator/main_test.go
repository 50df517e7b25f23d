package main

import (
	"testing"
	"time"
)

func TestSumCounter(t *testing.T) {
	text := `# HELP rest_client_requests_total Number of HTTP requests.
# TYPE rest_client_requests_total counter
rest_client_requests_total{code="200",host="127.0.0.1:1",method="GET"} 12
rest_client_requests_total{code="201",host="127.0.0.1:1",method="POST"} 3.5
rest_client_requests_total_other 100
other_total{x="y"} 7
`
	got, err := sumCounter(text, "rest_client_requests_total")
	if err != nil || got != 15.5 {
		t.Fatalf("sumCounter = %v, %v; want 15.5", got, err)
	}
	if _, err := sumCounter("other_total 1\n", "rest_client_requests_total"); err == nil {
		t.Fatal("a missing counter gave no error")
	}
}

func TestPercentile(t *testing.T) {
	ds := []time.Duration{5, 1, 4, 2, 3, 10, 9, 8, 7, 6}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 5}, {0.99, 10}, {1, 10}, {0.1, 1}, {0, 1}} {
		if got := percentile(ds, tc.q); got != tc.want {
			t.Errorf("percentile(%v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	if percentile(nil, 0.5) != 0 {
		t.Error("percentile of nothing is not 0")
	}
}
