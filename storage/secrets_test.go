package storage

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/bpo-dev/bpo/storage/storagetest"
)

// Credentials never reach an error or String(): not on a signature the server rejects, not
// on an unknown access key, not on bad options.
func TestSecretsNotInErrors(t *testing.T) {
	srv := storagetest.Start(t)
	uri := srv.NewBucket(t) + "/runs"
	ctx := context.Background()

	wrongSecret := s3Options(srv)
	wrongSecret.SecretAccessKey = "wrong-" + srv.SecretKey
	unknownKey := s3Options(srv)
	unknownKey.AccessKeyID = "AKUNKNOWNKEY123"
	unknownKey.SecretAccessKey = "unknown-secret-value-0123"
	withToken := s3Options(srv)
	withToken.SessionToken = "session-token-value-0123"
	for name, o := range map[string]Options{"wrong secret": wrongSecret, "unknown key": unknownKey, "session token": withToken} {
		s := mustOpen(t, uri, o)
		secrets := []string{o.SecretAccessKey, o.AccessKeyID, o.SessionToken}
		for op, call := range map[string]func() error{
			"write":  func() error { return s.Write(ctx, "x.json", []byte("{}")) },
			"create": func() error { return s.Create(ctx, "owner.json", []byte("{}")) },
			"read":   func() error { _, err := s.Read(ctx, "x.json"); return err },
			"list":   func() error { _, err := s.List(ctx, ""); return err },
			"ping":   func() error { return s.Ping(ctx) },
			"stage":  func() error { _, err := Stage(ctx, s, "", t.TempDir(), "x.json"); return err },
		} {
			err := call()
			if err == nil {
				t.Fatalf("%s: %s succeeded with bad credentials", name, op)
			}
			if errors.Is(err, ErrNotExist) {
				t.Errorf("%s: %s: a credential error reads as 'not found': %v", name, op, err)
			}
			for _, secret := range secrets {
				if secret != "" && strings.Contains(err.Error(), secret) {
					t.Errorf("%s: %s error carries a credential: %v", name, op, err)
				}
			}
			if !strings.Contains(err.Error(), "storage: ") || !strings.Contains(err.Error(), uri) {
				t.Errorf("%s: %s error does not name the store: %v", name, op, err)
			}
		}
		if str := s.String(); str != uri {
			t.Errorf("String() = %q, want %q", str, uri)
		}
	}

	// The redaction itself: a driver message that quotes a credential is scrubbed.
	s := mustOpen(t, uri, s3Options(srv))
	err := s.fail("read", "k", errors.New("signature for "+srv.AccessKey+" with "+srv.SecretKey+" mismatched"))
	if strings.Contains(err.Error(), srv.SecretKey) || strings.Contains(err.Error(), srv.AccessKey) || !strings.Contains(err.Error(), "[redacted]") {
		t.Errorf("fail() did not redact: %v", err)
	}
}

func TestOpenRefusesBadOptions(t *testing.T) {
	ctx := context.Background()
	const secret = "very-secret-value-42"
	for _, tc := range []struct {
		uri  string
		o    Options
		want string
	}{
		{"s3://b", Options{AccessKeyID: "AKX"}, "set both Options.AccessKeyID and Options.SecretAccessKey"},
		{"s3://b", Options{SecretAccessKey: secret}, "set both Options.AccessKeyID and Options.SecretAccessKey"},
		{"s3://b", Options{SessionToken: secret}, "SessionToken needs"},
		{"s3://b", Options{Endpoint: "minio:9000"}, "Options.Endpoint is not an http(s) URL"},
		{"s3://b", Options{Endpoint: "http://user:" + secret + "@minio:9000"}, "Options.Endpoint carries credentials"},
		{"s3://b", Options{PartSize: -1}, "Options.PartSize"},
		{"s3://b", Options{MaxAttempts: -1}, "Options.MaxAttempts"},
		{"gs://b", Options{Endpoint: "http://127.0.0.1:1"}, "gs:// uses Application Default Credentials"},
		{"s3://" + "AK:" + secret + "@b", Options{}, "credentials in the URI are not accepted"},
	} {
		_, err := Open(ctx, tc.uri, tc.o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%+v) = %v, want an error containing %q", tc.o, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("Open error carries a credential: %v", err)
		}
	}
}

// A region is needed to sign for AWS itself; an S3-compatible server gets us-east-1.
func TestOpenRegion(t *testing.T) {
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_DEFAULT_REGION", "")
	t.Setenv("AWS_CONFIG_FILE", os.DevNull)
	t.Setenv("AWS_ENDPOINT_URL", "")
	t.Setenv("AWS_ENDPOINT_URL_S3", "")
	ctx := context.Background()
	if _, err := Open(ctx, "s3://bucket", Options{}); err == nil || !strings.Contains(err.Error(), "set Options.Region (or AWS_REGION)") {
		t.Errorf("Open without a region = %v, want the fix named", err)
	}
	s, err := Open(ctx, "s3://bucket", Options{Endpoint: "http://127.0.0.1:9"})
	if err != nil {
		t.Fatalf("Open with an endpoint and no region: %v", err)
	}
	s.Close()
	t.Setenv("AWS_REGION", "eu-west-1")
	if s, err := Open(ctx, "s3://bucket", Options{}); err != nil {
		t.Errorf("Open with AWS_REGION: %v", err)
	} else {
		s.Close()
	}
}

// Credentials from the standard AWS environment variables work, and are redacted as well.
func TestCredentialsFromEnvironment(t *testing.T) {
	srv := storagetest.Start(t)
	uri := srv.NewBucket(t)
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	t.Setenv("AWS_CONFIG_FILE", os.DevNull)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", os.DevNull)
	ctx := context.Background()
	s := mustOpen(t, uri, Options{Endpoint: srv.Endpoint, PathStyle: true})
	if err := s.Write(ctx, "a", []byte("1")); err != nil {
		t.Fatalf("write with credentials from the environment: %v", err)
	}
	err := s.fail("read", "a", errors.New("bad "+srv.SecretKey))
	if strings.Contains(err.Error(), srv.SecretKey) {
		t.Errorf("a secret from AWS_SECRET_ACCESS_KEY is not redacted: %v", err)
	}
}

// gs:// compiles in and fails clearly without credentials (no test server exists for it).
func TestOpenGCSWithoutCredentials(t *testing.T) {
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", t.TempDir()+"/missing.json")
	_, err := Open(context.Background(), "gs://bucket/runs", Options{})
	if err == nil || !strings.Contains(err.Error(), "storage: open gs://bucket/runs") || !strings.Contains(err.Error(), "missing.json") {
		t.Fatalf("Open(gs://) without credentials = %v, want an error naming the store and the credentials file", err)
	}
}

// With credentials, gs:// opens without contacting Google (the token is fetched on first use).
func TestOpenGCSWithServiceAccount(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	sa, _ := json.Marshal(map[string]string{
		"type": "service_account", "project_id": "p", "private_key_id": "k1", "private_key": string(pemKey),
		"client_email": "bpo@p.iam.gserviceaccount.com", "client_id": "1", "token_uri": "https://oauth2.googleapis.com/token",
	})
	path := t.TempDir() + "/sa.json"
	if err := os.WriteFile(path, sa, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", path)
	s, err := Open(context.Background(), "gs://bucket/runs/", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.String() != "gs://bucket/runs" {
		t.Errorf("String() = %q", s.String())
	}
}
