package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/bpo-dev/bpo/experiment"
)

// experimentCmd is `bpo experiment`: a grid of AlignmentRuns (arms × seeds) from one file,
// run locally, rendered for a cluster, and aggregated into a results page.
func experimentCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "experiment",
		Short: "Run a grid of arms × seeds from an experiment file, render it for a cluster, and report it",
		Long: `An experiment file (see experiments/paper.yaml) holds a base AlignmentRun manifest and a list of
arms, each a JSON merge patch (written in YAML) of the base. Every arm runs for every seed as the
run <arm>-s<seed> with spec.seed = seed.`,
	}
	c.AddCommand(experimentRunCmd(), experimentRenderCmd(), experimentReportCmd())
	return c
}

type experimentFlags struct {
	file, seeds, arms, split string
}

func (f *experimentFlags) register(c *cobra.Command, split bool) {
	c.Flags().StringVarP(&f.file, "file", "f", "", "experiment file (YAML)")
	c.Flags().StringVar(&f.seeds, "seeds", "", "comma-separated seeds, e.g. 1,2,3 (default: the file's seeds)")
	c.Flags().StringVar(&f.arms, "arms", "", "comma-separated arms to use (default: all)")
	if split {
		c.Flags().StringVar(&f.split, "split", "", "held-out split for evaluation: eval or validation (default: the file's split, else eval); choose hyperparameters on validation")
	}
	_ = c.MarkFlagRequired("file")
}

// load reads the file and resolves seeds, arms and split.
func (f *experimentFlags) load() (*experiment.Experiment, []int64, []string, string, error) {
	x, err := experiment.Load(f.file)
	if err != nil {
		return nil, nil, nil, "", err
	}
	var seeds []int64
	if f.seeds != "" {
		if seeds, err = experiment.ParseSeeds(f.seeds); err != nil {
			return nil, nil, nil, "", err
		}
	}
	if seeds, err = x.SeedsOrDefault(seeds); err != nil {
		return nil, nil, nil, "", err
	}
	arms, err := x.SelectArms(splitList(f.arms))
	if err != nil {
		return nil, nil, nil, "", err
	}
	split, err := x.SplitOrDefault(f.split)
	if err != nil {
		return nil, nil, nil, "", err
	}
	return x, seeds, arms, split, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func seedList(seeds []int64) string {
	s := make([]string, len(seeds))
	for i, v := range seeds {
		s[i] = fmt.Sprint(v)
	}
	return strings.Join(s, ",")
}

func experimentRunCmd() *cobra.Command {
	var f experimentFlags
	var out string
	var parallel int
	c := &cobra.Command{
		Use:   "run -f FILE --seeds 1,2,3 --out DIR",
		Short: "Run every arm for every seed locally into DIR/runs (resumable)",
		Long: `run executes every (arm, seed) run with the same stage functions as 'bpo run', into the workspace
volume DIR/runs (run folders DIR/runs/<arm>-s<seed>). Interrupt it and run it again: finished runs and
stages are skipped. It prints one line per finished run and records the run's wall time in
DIR/runs/<run>/timing.json. Every manifest is validated before anything runs.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			x, seeds, arms, split, err := f.load()
			if err != nil {
				return err
			}
			if out == "" {
				return fmt.Errorf("--out is required")
			}
			command := fmt.Sprintf("bpo experiment run -f %s --seeds %s --out %s --split %s", f.file, seedList(seeds), out, split)
			if f.arms != "" {
				command += " --arms " + strings.Join(arms, ",")
			}
			if parallel > 1 {
				command += fmt.Sprintf(" --parallel %d", parallel)
			}
			// Validate every manifest before printing anything.
			runs, err := x.Runs(arms, seeds, split, false)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "experiment %s: %d arm(s), seeds %s (an arm that lists its own runs only those) = %d runs on the %s split, %d at a time, into %s\n",
				x.Name, len(arms), seedList(seeds), len(runs), split, max(parallel, 1), experiment.RunsDir(out))
			start := time.Now()
			outcomes, err := experiment.RunGrid(x, experiment.RunOptions{
				Out: out, Seeds: seeds, Arms: arms, Split: split, Parallel: parallel,
				Command: command, Stdout: w, Log: cmd.ErrOrStderr(),
			})
			if outcomes != nil {
				fmt.Fprintf(w, "done in %s; report with: bpo experiment report -f %s --out %s --doc docs/results.md\n",
					time.Since(start).Round(time.Second), f.file, out)
			}
			return err
		},
	}
	f.register(c, true)
	c.Flags().StringVar(&out, "out", "", "experiment folder: runs go to DIR/runs")
	c.Flags().IntVar(&parallel, "parallel", 1, "runs at a time (each run uses about one core)")
	_ = c.MarkFlagRequired("out")
	return c
}

func experimentRenderCmd() *cobra.Command {
	var f experimentFlags
	c := &cobra.Command{
		Use:   "render -f FILE --seeds 1,2,3",
		Short: "Print the AlignmentRun manifests of the grid for a cluster (multi-document YAML for kubectl apply -f -)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			x, seeds, arms, split, err := f.load()
			if err != nil {
				return err
			}
			runs, err := x.Runs(arms, seeds, split, true)
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(experiment.Render(runs))
			return err
		},
	}
	f.register(c, true)
	return c
}

func experimentReportCmd() *cobra.Command {
	var f experimentFlags
	var out, records, recordsOut, doc, plots, notes string
	c := &cobra.Command{
		Use:   "report -f FILE (--out DIR | --records FILE) --doc docs/results.md",
		Short: "Aggregate the runs into a results page with plots (mean ± std over seeds, bootstrap CIs, matched-KL frontiers)",
		Long: `report reads the runs of DIR (--out), writes their aggregated per-run records (--records-out, default
DIR/records.json; gzipped past 2 MB) and computes the page from them. With --records it reads such a
file instead and needs no run folder: commit the records next to the page, and the page can be
regenerated from the repository alone (the page shows the command).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			x, err := experiment.Load(f.file)
			if err != nil {
				return err
			}
			var seeds []int64
			if f.seeds != "" {
				if seeds, err = experiment.ParseSeeds(f.seeds); err != nil {
					return err
				}
			}
			rep, err := experiment.BuildReport(x, experiment.ReportOptions{
				Out: out, Records: records, RecordsOut: recordsOut, Doc: doc, PlotDir: plots, Seeds: seeds, Notes: notes,
			})
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "%-24s %4s %15s %15s %15s %22s\n", "arm", "n", "win rate", "gold reward", "KL", "Δ win vs "+rep.Baseline)
			for _, st := range rep.Arms {
				d := ""
				if st.DeltaWin != nil {
					d = st.DeltaWin.Format("%.3f")
				}
				fmt.Fprintf(w, "%-24s %4d %15s %15s %15s %22s\n", st.Arm, len(st.Seeds), st.WinRate.Format("%.3f"), st.GoldReward.Format("%.3f"), st.KL.Format("%.2f"), d)
			}
			for _, c := range rep.Checks {
				fmt.Fprintf(w, "note: %s\n", c)
			}
			if rep.RecordsBytes > 0 {
				fmt.Fprintf(w, "wrote the records %s (%d bytes)\n", rep.Records, rep.RecordsBytes)
			}
			if doc != "" {
				fmt.Fprintf(w, "wrote %s and %d plot(s)\n", doc, len(rep.Files))
			}
			return nil
		},
	}
	c.Flags().StringVarP(&f.file, "file", "f", "", "experiment file (YAML)")
	c.Flags().StringVar(&f.seeds, "seeds", "", "comma-separated seeds to report (default: every seed found in DIR/runs, or in the records)")
	c.Flags().StringVar(&out, "out", "", "experiment folder given to `experiment run` (the runs are read from DIR/runs)")
	c.Flags().StringVar(&records, "records", "", "records file to report from instead of --out, e.g. experiments/records/paper.json.gz")
	c.Flags().StringVar(&recordsOut, "records-out", "", "where a report from --out writes the records (default DIR/records.json; .gz to compress), e.g. experiments/records/paper.json.gz")
	c.Flags().StringVar(&doc, "doc", "", "markdown page to write, e.g. docs/results.md (plots go next to it, into docs/results/)")
	c.Flags().StringVar(&plots, "plots", "", "folder for the PNG plots (default: the --doc path without .md)")
	c.Flags().StringVar(&notes, "notes", "", "hand-written markdown to include as the page's Findings section, e.g. docs/results-findings.md")
	_ = c.MarkFlagRequired("file")
	c.MarkFlagsOneRequired("out", "records")
	c.MarkFlagsMutuallyExclusive("out", "records")
	c.MarkFlagsMutuallyExclusive("records", "records-out")
	return c
}
