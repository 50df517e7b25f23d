package storage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"

	"github.com/aws/smithy-go"
	"gocloud.dev/gcerrors"
)

var (
	// ErrNotExist matches (errors.Is) an error about an object that is not there.
	ErrNotExist = fs.ErrNotExist
	// ErrExist matches an error of a create-only write whose key is already taken.
	ErrExist = fs.ErrExist
)

// opError is an error of one store operation. Its text is built once, redacted, and the raw
// driver error is not kept: its text may quote request headers or credentials, and anyone
// could print it through errors.Unwrap. What callers need to branch on survives as kind.
type opError struct {
	msg  string
	kind []error // ErrNotExist, ErrExist, context.Canceled, context.DeadlineExceeded
}

func (e *opError) Error() string   { return e.msg }
func (e *opError) Unwrap() []error { return e.kind }

// fail wraps a driver error of op on key: "storage: read s3://b/run/x.json: <cause>".
func (s *Store) fail(op, key string, err error) error {
	if err == nil {
		return nil
	}
	var kind []error
	switch gcerrors.Code(err) {
	case gcerrors.NotFound:
		kind = append(kind, ErrNotExist)
	case gcerrors.FailedPrecondition:
		kind = append(kind, ErrExist)
	}
	switch {
	case errors.Is(err, fs.ErrNotExist) && len(kind) == 0:
		kind = append(kind, ErrNotExist)
	case errors.Is(err, fs.ErrExist) && len(kind) == 0:
		kind = append(kind, ErrExist)
	}
	for _, c := range []error{context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, c) {
			kind = append(kind, c)
		}
	}
	cause := err.Error()
	var api smithy.APIError
	switch {
	case errors.As(err, &api) && api.ErrorCode() == "NoSuchBucket":
		// Not ErrNotExist: a stage must not take a missing bucket for "not done yet".
		kind = slices.DeleteFunc(kind, func(e error) bool { return e == ErrNotExist })
		cause = fmt.Sprintf("bucket %q does not exist: create it, or fix the store URI", s.loc.bucket)
	case errors.Is(err, ErrExist) || containsErr(kind, ErrExist):
		cause = "already exists (a create-only write lost to an earlier writer)"
	case containsErr(kind, ErrNotExist):
		cause = "not found"
	}
	return &opError{msg: s.redact(fmt.Sprintf("storage: %s %s: %s", op, s.where(key), cause)), kind: kind}
}

func containsErr(list []error, target error) bool { return slices.Contains(list, target) }

// where names key in messages the way a person would address it: the store URI and the key.
func (s *Store) where(key string) string {
	if key == "" {
		return s.loc.String()
	}
	return strings.TrimSuffix(s.loc.String(), "/") + "/" + key
}

// redact replaces every credential the store knows of in a message.
func (s *Store) redact(msg string) string {
	for _, secret := range s.secrets {
		if secret != "" {
			msg = strings.ReplaceAll(msg, secret, "[redacted]")
		}
	}
	return msg
}
