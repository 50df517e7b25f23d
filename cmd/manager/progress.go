package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"k8s.io/client-go/kubernetes"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/bpo-dev/bpo/controllers"
)

// addProgressServer adds the progress endpoint (controllers.ProgressServer) to the manager,
// unless --progress-bind-address=0. It serves on the leader only: reports are folded into status
// by the reconciler, which runs on the leader; a standby refuses connections and the pod's next
// report (a few seconds later) may reach the leader (docs/design.md, "Live progress").
func addProgressServer(mgr ctrl.Manager, o *options) (*controllers.ProgressServer, error) {
	if o.progressAddr == "0" || o.progressAddr == "" {
		return nil, nil
	}
	cs, err := kubernetes.NewForConfig(mgr.GetConfig())
	if err != nil {
		return nil, fmt.Errorf("progress endpoint: %w", err)
	}
	p := controllers.NewProgressServer(mgr.GetCache(), controllers.APITokenReviewer{Client: cs.AuthenticationV1()})
	srv := &http.Server{Handler: p, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}
	run := manager.RunnableFunc(func(ctx context.Context) error {
		l, err := net.Listen("tcp", o.progressAddr)
		if err != nil {
			return fmt.Errorf("progress endpoint: %w", err)
		}
		go func() {
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		}()
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("progress endpoint: %w", err)
		}
		return nil
	})
	if err := mgr.Add(leaderOnly{run}); err != nil {
		return nil, fmt.Errorf("adding the progress endpoint: %w", err)
	}
	return p, nil
}

// leaderOnly is a runnable the manager starts once this replica leads.
type leaderOnly struct{ manager.RunnableFunc }

func (leaderOnly) NeedLeaderElection() bool { return true }
