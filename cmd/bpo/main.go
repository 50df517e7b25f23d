// Command bpo runs BPO alignment: one stage per invocation (sample, label, train,
// eval: what the operator's pods run), the whole loop locally (run), and the tools
// around it (score, pretrain, sft).
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	root := &cobra.Command{
		Use:           "bpo",
		Short:         "Online preference alignment with a behavior-model reference (BPO)",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(runCmd(), stageCmd("sample"), stageCmd("label"), stageCmd("train"), stageCmd("eval"), scoreCmd())
	root.AddCommand(experimentCmd())
	root.AddCommand(extraCommands()...)
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "bpo:", err)
		os.Exit(1)
	}
}
