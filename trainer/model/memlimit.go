package model

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// MemoryLimitEnv overrides the container's memory limit (a byte count, or "max" for none); tests
// set it.
const MemoryLimitEnv = "BPO_MEMORY_LIMIT"

// The cgroup files holding the memory limit of the container: v2's memory.max ("max" or bytes),
// else v1's memory.limit_in_bytes (a huge number when unlimited). Variables for tests.
var (
	memCgroupV2File = "/sys/fs/cgroup/memory.max"
	memCgroupV1File = "/sys/fs/cgroup/memory/memory.limit_in_bytes"
)

// memUnlimited: a cgroup v1 limit at or above this (2^62 bytes) means no limit (the kernel reports
// 2^63-1 rounded down to a page).
const memUnlimited = int64(1) << 62

// MemoryLimit returns the memory limit of the container the process runs in, in bytes, and whether
// there is one: $BPO_MEMORY_LIMIT when set (an invalid value is an error), else the cgroup v2 file
// memory.max, else the cgroup v1 file memory.limit_in_bytes. No readable cgroup file, "max" or an
// unparsable file mean no limit: the check is a safeguard and never stops a run on its own failure.
func MemoryLimit() (int64, bool, error) {
	if v, set := os.LookupEnv(MemoryLimitEnv); set && strings.TrimSpace(v) != "" {
		n, ok, err := ParseMemoryLimit(v)
		if err != nil {
			return 0, false, fmt.Errorf("$%s: %w", MemoryLimitEnv, err)
		}
		return n, ok, nil
	}
	for _, path := range []string{memCgroupV2File, memCgroupV1File} {
		data, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		n, ok, err := ParseMemoryLimit(string(data))
		if err != nil {
			return 0, false, nil
		}
		return n, ok, nil
	}
	return 0, false, nil
}

// ParseMemoryLimit parses a cgroup memory limit file's content: "max" (cgroup v2) or a byte count,
// with surrounding white space. A count of 2^62 bytes or more (cgroup v1's "unlimited") means no
// limit; zero, negative or non-numeric content is an error.
func ParseMemoryLimit(s string) (limit int64, ok bool, err error) {
	s = strings.TrimSpace(s)
	if s == "max" {
		return 0, false, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n == 0 {
		return 0, false, fmt.Errorf("memory limit %q: want a positive byte count or \"max\"", s)
	}
	if n >= uint64(memUnlimited) {
		return 0, false, nil
	}
	return int64(n), true, nil
}
