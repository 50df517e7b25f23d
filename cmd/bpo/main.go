// Command bpo runs BPO alignment: one stage per invocation (sample, label, train,
// eval: what the operator's pods run), the whole loop locally (run), and the tools
// around it (score, pretrain, sft).
package main

import (
	"fmt"
	"os"
	"runtime/pprof"

	"github.com/spf13/cobra"

	"github.com/bpo-dev/bpo/pipeline"
	"github.com/bpo-dev/bpo/trainer/blas"
)

func main() {
	root := &cobra.Command{
		Use:           "bpo",
		Short:         "Online preference alignment with a behavior-model reference (BPO)",
		Version:       bpoVersion(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	// One threads knob for every command: the kernels' and the GEMMs' goroutines. The default is
	// BPO_THREADS, else GOMAXPROCS, which the Go runtime derives from the container's CPU limit, so
	// a stage pod's resources.limits.cpu sets it without a flag.
	var threads int
	var profile string
	var profileFile *os.File
	root.PersistentFlags().IntVar(&threads, "threads", 0, "threads for the trainer's kernels and matrix products (0: $BPO_THREADS, else the CPU limit)")
	root.PersistentFlags().StringVar(&profile, "profile", "", "write a CPU profile of the whole command to this file (go tool pprof)")
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		if threads < 0 {
			return fmt.Errorf("--threads must be >= 0, got %d", threads)
		}
		if threads > 0 {
			blas.SetThreads(threads)
		}
		if profile != "" {
			f, err := os.Create(profile)
			if err != nil {
				return fmt.Errorf("--profile: %w", err)
			}
			if err := pprof.StartCPUProfile(f); err != nil {
				f.Close()
				return fmt.Errorf("--profile: %w", err)
			}
			profileFile = f
		}
		return nil
	}
	root.PersistentPostRunE = func(*cobra.Command, []string) error {
		if profileFile == nil {
			return nil
		}
		pprof.StopCPUProfile()
		return profileFile.Close()
	}
	root.AddCommand(runCmd(), scoreCmd(), experimentCmd(), serveCmd(), conformanceCmd())
	for _, sc := range stageCommands() {
		root.AddCommand(sc.cmd)
	}
	root.AddCommand(extraCommands()...)
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "bpo:", pipeline.Redact(err.Error()))
		os.Exit(1)
	}
}

// engineLine says what the trainer computes with, for logs: precision, GEMM backend and threads.
func engineLine() string {
	b := blas.Backend()
	lib := b.Name
	if b.CoreType != "" {
		lib += " (" + b.CoreType + " kernels)"
	}
	return fmt.Sprintf("engine float32, %s, %d threads", lib, blas.Threads())
}
