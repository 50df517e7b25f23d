package storage

import (
	"fmt"
	"net/url"
	"path"
	"strings"
)

// location is a parsed store URI.
type location struct {
	scheme string // "s3", "gs" or "file"
	bucket string // s3, gs
	dir    string // file: the absolute folder that is the bucket
	prefix string // the key prefix inside the bucket (Sub adds to it), without slashes at either end
}

// String is the URI again, in a canonical form (what Store.String shows).
func (l location) String() string {
	if l.scheme == "file" {
		return "file://" + join(strings.TrimSuffix(l.dir, "/"), l.prefix)
	}
	return l.scheme + "://" + join(l.bucket, l.prefix)
}

// parseURI reads s3://bucket[/prefix], gs://bucket[/prefix] or file:///abs/path. It never
// echoes a URI's user information (it may hold a secret) and accepts no query: settings
// go in Options, so that each has one place.
func parseURI(raw string) (location, error) {
	if raw == "" {
		return location{}, fmt.Errorf("storage URI is empty: use s3://bucket/prefix, gs://bucket/prefix or file:///abs/path")
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url's error quotes the whole input, which may carry credentials.
		return location{}, fmt.Errorf("storage URI is not a URL: use s3://bucket/prefix, gs://bucket/prefix or file:///abs/path")
	}
	if u.User != nil {
		return location{}, fmt.Errorf("storage URI %s://…: credentials in the URI are not accepted; pass them in Options or the standard environment variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)", u.Scheme)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return location{}, fmt.Errorf("storage URI %q has a query or fragment: set endpoint, region and path style in Options", u.Scheme+"://"+u.Host+u.Path)
	}
	switch u.Scheme {
	case "s3", "gs":
		if u.Host == "" {
			return location{}, fmt.Errorf("storage URI %q names no bucket: use %s://bucket/prefix", raw, u.Scheme)
		}
		prefix := strings.Trim(u.Path, "/")
		if prefix != "" {
			if err := checkKey("storage URI prefix", prefix); err != nil {
				return location{}, err
			}
		}
		return location{scheme: u.Scheme, bucket: u.Host, prefix: prefix}, nil
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return location{}, fmt.Errorf("storage URI %q: a file URI needs an absolute path with three slashes, as in file:///workspace", raw)
		}
		if !strings.HasPrefix(u.Path, "/") {
			return location{}, fmt.Errorf("storage URI %q: a file URI needs an absolute path, as in file:///workspace", raw)
		}
		dir := path.Clean(u.Path)
		if dir == "/" {
			return location{}, fmt.Errorf("storage URI %q is the whole file system: name a folder, as in file:///workspace", raw)
		}
		return location{scheme: "file", dir: dir}, nil
	case "":
		return location{}, fmt.Errorf("storage URI %q has no scheme: use s3://bucket/prefix, gs://bucket/prefix or file:///abs/path", raw)
	}
	return location{}, fmt.Errorf("storage URI scheme %q is not supported: use s3, gs or file", u.Scheme)
}
