package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/pipeline"
)

func runCmd() *cobra.Command {
	var file, workspace, split string
	var quiet bool
	c := &cobra.Command{
		Use:   "run -f RUN.yaml",
		Short: "Run a whole alignment locally, in this process (the same YAML kubectl apply takes)",
		Long: `run executes every stage of every phase of an AlignmentRun in this process, with the
same stage functions the operator's pods run. Interrupt it and run it again: it resumes
after the last completed stage. At the end it writes report.md and plots into the run's
workspace folder.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ar, err := pipeline.LoadRunFile(file)
			if err != nil {
				return err
			}
			run, err := pipeline.NewRun(ar)
			if err != nil {
				return err
			}
			volume := cmp.Or(workspace, ar.Spec.Workspace.Path)
			var sess *pipeline.StoreSession
			if ar.Spec.Workspace.ObjectStore != nil {
				// The workspace is a bucket: work in a local copy of the run's folder (kept
				// in --workspace or spec.workspace.path when set, else a temp folder) and
				// publish after every stage.
				if volume == "" {
					tmp, err := os.MkdirTemp("", "bpo-run-")
					if err != nil {
						return err
					}
					defer os.RemoveAll(tmp)
					volume = tmp
				}
				if sess, err = pipeline.OpenStoreSession(context.Background(), run, volume, nil); err != nil {
					return err
				}
				defer sess.Close()
			} else if volume == "" {
				return fmt.Errorf("%s: spec.workspace.path is not set (it names the local folder for bpo run); set it, pass --workspace, or set spec.workspace.objectStore", file)
			}
			env, err := pipeline.NewEnv(run, volume)
			if err != nil {
				return err
			}
			publish := func(int, string) error {
				if sess == nil {
					return nil
				}
				_, err := sess.Publish(context.Background())
				return err
			}
			if split != "eval" && split != "validation" {
				return fmt.Errorf("--split %q: use eval or validation", split)
			}
			env.EvalSplit = split
			if cmdline := ar.Spec.Trainer.Command; len(cmdline) > 0 {
				// A train stage of another engine (docs/stage-contract.md): run as a pod would run it.
				env.TrainCommand = append(slices.Clone(cmdline), ar.Spec.Trainer.Args...)
			}
			out := cmd.OutOrStdout()
			where := env.WS.Root
			if o := ar.Spec.Workspace.ObjectStore; o != nil {
				where = fmt.Sprintf("%s/%s (local copy %s)", strings.TrimSuffix(o.URI, "/"), run.Name, env.WS.Root)
			}
			fmt.Fprintf(out, "run %s: %s\nworkspace %s\n%s\n\n", run.Name, run.Describe(), where, engineLine())
			start := time.Now()
			bars := newBars(cmd.ErrOrStderr(), quiet)
			env.Progress = bars.progress
			sums, err := env.RunAll(pipeline.RunHooks{
				StageStart: bars.stageStart,
				PhaseDone: func(s pipeline.PhaseSummary) {
					bars.finish()
					fmt.Fprintf(out, "\n%s", pipeline.FormatTable([]pipeline.PhaseSummary{s}))
				},
				StageDone: publish,
			})
			bars.finish()
			if err != nil {
				return err
			}
			if err := publish(0, ""); err != nil {
				return err
			}
			fmt.Fprintf(out, "\nAll phases (%s):\n%s", time.Since(start).Round(time.Second), pipeline.FormatTable(sums))
			if r, ok := env.Done(run.Phases(), v1alpha1.StageReport, -1); ok {
				fmt.Fprintf(out, "\n%s\nreport: %s\n", r.Message, filepath.Join(env.VolumeRoot, r.Report))
			}
			if r, ok := env.Done(run.Phases(), v1alpha1.StageExport, -1); ok && r.Outputs != nil {
				fmt.Fprintf(out, "policy: %s\nadapter: %s\n", r.Outputs.Policy, r.Outputs.Adapter)
			}
			return nil
		},
	}
	c.Flags().StringVarP(&file, "file", "f", "", "AlignmentRun manifest (YAML)")
	c.Flags().StringVar(&workspace, "workspace", "", "workspace volume folder (default: spec.workspace.path)")
	c.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress bars")
	c.Flags().StringVar(&split, "split", "eval", "held-out prompts to evaluate on: eval, or validation when choosing settings (spec.budget.evalPrompts must fit the split)")
	_ = c.MarkFlagRequired("file")
	return c
}

// bars shows one progress bar per stage invocation.
type bars struct {
	w      io.Writer
	quiet  bool
	label  string
	bar    *progressbar.ProgressBar
	total  int
	substg string
}

func newBars(w io.Writer, quiet bool) *bars {
	if fi, err := os.Stderr.Stat(); err == nil && fi.Mode()&os.ModeCharDevice == 0 {
		quiet = true // not a terminal: keep logs clean
	}
	return &bars{w: w, quiet: quiet}
}

func (b *bars) stageStart(k int, stage string, index int) {
	b.finish()
	b.label = fmt.Sprintf("phase %d %s", k, stage)
	if k == 0 {
		b.label = "baseline eval"
	}
	if index >= 0 {
		b.label += fmt.Sprintf(" %d", index)
	}
}

func (b *bars) progress(u pipeline.ProgressUpdate) {
	stage, done, total := u.Stage, u.Done, u.Total
	if b.quiet {
		return
	}
	if b.bar == nil || b.total != total || b.substg != stage {
		b.finish()
		b.total, b.substg = total, stage
		b.bar = progressbar.NewOptions(total,
			progressbar.OptionSetWriter(b.w),
			progressbar.OptionSetDescription(fmt.Sprintf("%-22s", b.label)),
			progressbar.OptionShowCount(),
			progressbar.OptionSetWidth(30),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
		)
	}
	_ = b.bar.Set(done)
}

func (b *bars) finish() {
	if b.bar != nil {
		_ = b.bar.Finish()
		b.bar = nil
	}
}
