package storage

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"gocloud.dev/blob"
	"gocloud.dev/blob/fileblob"
	"gocloud.dev/blob/gcsblob"
	"gocloud.dev/blob/s3blob"
	"gocloud.dev/gcp"
)

// Options are the settings of an s3:// store (a gs:// store uses Application Default
// Credentials; a file:// store needs none). Every field may be left empty.
type Options struct {
	// Endpoint is the URL of an S3-compatible server (MinIO, Ceph RGW, versitygw, R2...),
	// e.g. "http://minio.storage:9000". Empty: AWS itself, or AWS_ENDPOINT_URL_S3 /
	// AWS_ENDPOINT_URL when set.
	Endpoint string
	// Region is the bucket's region. Empty: AWS_REGION / AWS_DEFAULT_REGION / the shared
	// config; with an Endpoint and no region anywhere, "us-east-1" (what most
	// S3-compatible servers expect).
	Region string
	// PathStyle addresses buckets as <endpoint>/<bucket>/<key> instead of
	// <bucket>.<endpoint>/<key>: most S3-compatible servers need it.
	PathStyle bool
	// AccessKeyID and SecretAccessKey (and SessionToken for temporary credentials) are
	// static credentials. Empty: the standard AWS chain (AWS_ACCESS_KEY_ID and
	// AWS_SECRET_ACCESS_KEY, web identity / IRSA, the shared files). They never appear in
	// an error or in String().
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string
	// PartSize is the size in bytes of one part of a multipart upload, which an object
	// larger than it becomes (0: the SDK's default; S3's minimum is 5 MiB).
	PartSize int
	// MaxAttempts is how many times a request is tried before its error is returned
	// (0: the AWS SDK's default, 3, with backoff).
	MaxAttempts int
}

// Store is an opened workspace store: a bucket and a key prefix. It is safe for
// concurrent use. Close the Store that Open returned; stores from Sub share it.
type Store struct {
	b        *blob.Bucket
	loc      location
	secrets  []string
	partSize int
	root     bool
	// afterCopy, when a test sets it, runs after an object's bytes went to the driver and
	// before the write is committed: the moment a pod can be killed mid-upload.
	afterCopy func(key string)
}

// Open opens the store that uri names: s3://bucket[/prefix], gs://bucket[/prefix] or
// file:///abs/path (the folder is created if missing). Opening does not contact the
// server: a wrong endpoint or credential shows on the first operation.
func Open(ctx context.Context, uri string, opts Options) (*Store, error) {
	loc, err := parseURI(uri)
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	s := &Store{loc: loc, partSize: opts.PartSize, root: true}
	s.secrets = secretsOf(opts)
	if opts.PartSize < 0 {
		return nil, fmt.Errorf("storage: Options.PartSize is %d: use 0 for the default or a size in bytes (at least 5 MiB for S3)", opts.PartSize)
	}
	if opts.MaxAttempts < 0 {
		return nil, fmt.Errorf("storage: Options.MaxAttempts is %d: use 0 for the default or a count of tries", opts.MaxAttempts)
	}
	switch loc.scheme {
	case "s3":
		s.b, err = openS3(ctx, loc, opts)
	case "gs":
		if opts.Endpoint != "" || opts.AccessKeyID != "" || opts.SecretAccessKey != "" || opts.PathStyle {
			return nil, fmt.Errorf("storage: %s: Options.Endpoint, PathStyle and the access keys are for s3:// stores; gs:// uses Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS or workload identity)", loc)
		}
		s.b, err = openGCS(ctx, loc)
	case "file":
		// Temp files go next to their target (NoTempDir), since a rename across mounts
		// fails and a pod's /tmp is never on the workspace volume; no .attrs sidecars, so the
		// folder holds exactly the workspace layout that pipeline.Workspace writes.
		s.b, err = fileblob.OpenBucket(loc.dir, &fileblob.Options{
			CreateDir: true, NoTempDir: true, Metadata: fileblob.MetadataDontWrite, DirFileMode: 0o755,
		})
	}
	if err != nil {
		return nil, s.fail("open", "", err)
	}
	return s, nil
}

func secretsOf(o Options) []string {
	var out []string
	for _, v := range []string{o.SecretAccessKey, o.SessionToken, o.AccessKeyID,
		os.Getenv("AWS_SECRET_ACCESS_KEY"), os.Getenv("AWS_SESSION_TOKEN"), os.Getenv("AWS_ACCESS_KEY_ID")} {
		// A credential of a few characters would redact ordinary words of messages.
		if len(v) >= 4 {
			out = append(out, v)
		}
	}
	return out
}

func openS3(ctx context.Context, loc location, o Options) (*blob.Bucket, error) {
	if (o.AccessKeyID == "") != (o.SecretAccessKey == "") {
		return nil, errors.New("set both Options.AccessKeyID and Options.SecretAccessKey, or neither (to use the standard AWS credential chain)")
	}
	if o.SessionToken != "" && o.AccessKeyID == "" {
		return nil, errors.New("Options.SessionToken needs Options.AccessKeyID and Options.SecretAccessKey")
	}
	if o.Endpoint != "" {
		u, err := url.Parse(o.Endpoint)
		switch {
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			return nil, errors.New("Options.Endpoint is not an http(s) URL: use a form like http://minio.storage:9000")
		case u.User != nil:
			return nil, errors.New("Options.Endpoint carries credentials: put them in Options.AccessKeyID and Options.SecretAccessKey")
		}
	}
	var lo []func(*awsconfig.LoadOptions) error
	if o.Region != "" {
		lo = append(lo, awsconfig.WithRegion(o.Region))
	}
	if o.AccessKeyID != "" {
		lo = append(lo, awsconfig.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(o.AccessKeyID, o.SecretAccessKey, o.SessionToken)))
	}
	if o.MaxAttempts > 0 {
		lo = append(lo, awsconfig.WithRetryMaxAttempts(o.MaxAttempts))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, lo...)
	if err != nil {
		return nil, fmt.Errorf("AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		if o.Endpoint == "" && cfg.BaseEndpoint == nil {
			return nil, errors.New("no region for the bucket: set Options.Region (or AWS_REGION)")
		}
		cfg.Region = "us-east-1"
	}
	client := s3.NewFromConfig(cfg, func(so *s3.Options) {
		if o.Endpoint != "" {
			so.BaseEndpoint = aws.String(o.Endpoint)
		}
		so.UsePathStyle = o.PathStyle
	})
	// The upload manager does not read the client's checksum setting (gocloud passes it on).
	return s3blob.OpenBucket(ctx, client, loc.bucket, &s3blob.Options{RequestChecksumCalculation: cfg.RequestChecksumCalculation})
}

// openGCS opens a bucket with Application Default Credentials. gcsblob's URL opener would
// print a warning and go on anonymously when there are none; a stage must fail instead.
func openGCS(ctx context.Context, loc location) (*blob.Bucket, error) {
	creds, err := gcp.DefaultCredentials(ctx)
	if err != nil {
		return nil, fmt.Errorf("Google Application Default Credentials: %w (set GOOGLE_APPLICATION_CREDENTIALS or use workload identity)", err)
	}
	client, err := gcp.NewHTTPClient(gcp.DefaultTransport(), gcp.CredentialsTokenSource(creds))
	if err != nil {
		return nil, err
	}
	return gcsblob.OpenBucket(ctx, client, loc.bucket, nil)
}

// String is the store's URI (no credentials).
func (s *Store) String() string { return s.loc.String() }

// Close releases the bucket. Stores from Sub share it: close only the one Open returned.
func (s *Store) Close() error {
	if !s.root {
		return nil
	}
	return s.fail("close", "", s.b.Close())
}

// Sub is the store under prefix (e.g. a run's folder), sharing this one's connection.
func (s *Store) Sub(prefix string) (*Store, error) {
	p, err := checkPrefix("storage: Sub prefix", prefix)
	if err != nil {
		return nil, err
	}
	sub := *s
	sub.loc.prefix = join(s.loc.prefix, p)
	sub.root = false
	return &sub, nil
}
