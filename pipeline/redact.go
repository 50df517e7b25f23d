package pipeline

import (
	"os"
	"regexp"
	"strings"

	"github.com/bpo-dev/bpo/api/v1alpha1"
)

// What a stage says about itself (its termination message, which the controller copies into the
// run's status and events, and its log) never carries a credential: the values of the secret
// environment variables a stage pod may be given, and anything that follows "Bearer" (a service
// that echoes the request's Authorization header into an error body), are replaced.

// secretEnv are the environment variables that hold secrets in stage pods.
var secretEnv = []string{v1alpha1.EnvAnnotatorToken, v1alpha1.EnvEvaluatorToken, v1alpha1.EnvSamplerToken}

var bearerRE = regexp.MustCompile(`(?i)(bearer\s+)[^\s"',;}\]]+`)

const redacted = "[redacted]"

// Redact returns msg with the values of the secret environment variables and bearer tokens
// replaced by "[redacted]".
func Redact(msg string) string {
	for _, name := range secretEnv {
		// Very short values would redact ordinary text; a real token is never that short.
		if v := os.Getenv(name); len(v) >= 4 {
			msg = strings.ReplaceAll(msg, v, redacted)
		}
	}
	return bearerRE.ReplaceAllString(msg, "${1}"+redacted)
}
