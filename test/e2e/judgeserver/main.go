// Command judgeserver is the e2e's judge service: it serves, as a Deployment in the test
// cluster, the rule-based OpenAI-compatible chat-completions judge of
// trainer/annotator/annotatortest (it prefers the continuation the built-in sentiment annotator
// scores higher, and says tie on equal scores), behind the bearer token of $JUDGE_TOKEN. An
// AlignmentRun whose spec.labeler.annotator is kind OpenAIJudge labels through it.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/bpo-dev/bpo/trainer/annotator/annotatortest"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8089", "listen address")
	flag.Parse()
	judge := &annotatortest.Judge{Common: annotatortest.Common{Token: os.Getenv("JUDGE_TOKEN")}}
	srv := &http.Server{Addr: *addr, Handler: judge, ReadHeaderTimeout: 10 * time.Second}
	fmt.Printf("judgeserver: listening on %s (token set: %v)\n", *addr, judge.Token != "")
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(os.Stderr, "judgeserver:", err)
		os.Exit(1)
	}
}
