package storage

import (
	"fmt"
	"strings"
)

// checkKey rejects keys that would mean different things on different backends: S3 takes
// any byte string, but a folder cannot hold "a/../b", "a//b" or a trailing slash, and a
// key that escapes its prefix would reach another run's files. field names the caller's
// argument in the error, so the message says which input to fix.
func checkKey(field, key string) error {
	switch {
	case key == "":
		return fmt.Errorf("%s is empty: name an object such as \"phase-1/pairs/shard-0.jsonl\"", field)
	case strings.HasPrefix(key, "/"):
		return fmt.Errorf("%s %q starts with '/': keys are relative to the store's prefix", field, key)
	case strings.HasSuffix(key, "/"):
		return fmt.Errorf("%s %q ends with '/': that names a folder, not an object", field, key)
	case strings.ContainsRune(key, '\\'):
		return fmt.Errorf("%s %q contains '\\': separate folders with '/'", field, key)
	}
	for _, r := range key {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%s %q contains a control character", field, key)
		}
	}
	for _, seg := range strings.Split(key, "/") {
		switch seg {
		case "":
			return fmt.Errorf("%s %q has an empty path segment ('//')", field, key)
		case ".", "..":
			return fmt.Errorf("%s %q has a %q segment: name the object by its plain path", field, key, seg)
		}
		if isTempName(seg) {
			return fmt.Errorf("%s %q ends like a temporary file (%q): pick another name", field, key, seg)
		}
	}
	return nil
}

// checkPrefix accepts "" (the whole store) or a key-like folder name, with or without a
// trailing slash, and returns it without one.
func checkPrefix(field, prefix string) (string, error) {
	p := strings.TrimSuffix(prefix, "/")
	if p == "" {
		return "", nil
	}
	if err := checkKey(field, p); err != nil {
		return "", err
	}
	return p, nil
}

// join puts a key under a prefix; either may be "".
func join(prefix, key string) string {
	switch {
	case prefix == "":
		return key
	case key == "":
		return prefix
	}
	return prefix + "/" + key
}

// isTempName reports whether a file name is a temporary file of an atomic write that is
// still running or was killed: fileblob's "<name>.<hex nanos>.tmp" and the pipeline's
// ".<name>.tmp-<random>". Listings skip them, so a reader never sees one as an object.
func isTempName(name string) bool {
	if strings.HasPrefix(name, ".") && strings.Contains(name, ".tmp-") {
		return true
	}
	rest, ok := strings.CutSuffix(name, ".tmp")
	if !ok {
		return false
	}
	dot := strings.LastIndexByte(rest, '.')
	if dot < 0 || dot == len(rest)-1 {
		return false
	}
	for _, c := range rest[dot+1:] {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// IsTemp reports whether a file name is a temporary file of an atomic write (fileblob's or the
// pipeline's), which is never an object: a caller that walks a local folder skips it too.
func IsTemp(name string) bool { return isTempName(name) }
