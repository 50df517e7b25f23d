package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bpo-dev/bpo/stage"
)

// conformanceCmd checks a stage implementation (any program) against the stage contract
// (docs/stage-contract.md): it prepares a fixture workspace with our own stages, runs the
// command there as the operator's pods would, and checks what it wrote.
func conformanceCmd() *cobra.Command {
	var phase, shards int
	var keep bool
	c := &cobra.Command{
		Use:   "conformance <sample|label|train|eval> [--phase K] -- <command...>",
		Short: "Check a stage implementation against the stage contract " + stage.ContractVersion,
		Long: `Prepares a fixture workspace (the built-in tiny-reviews model and reviews task) by running
bpo's own stages up to the one under test, runs <command...> once per completion index with the
contract's flags (--config --workspace --phase [--shards] --termination-log appended) and
environment (JOB_COMPLETION_INDEX, BPO_RUN_NAME, BPO_RUN_UID) against a copy of it, and checks its
outputs against the contract's schemas and invariants. Exits non-zero when a check fails.

Example: bpo conformance sample -- bpo sample`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dash := cmd.ArgsLenAtDash()
			if dash != 1 || len(args) < 2 {
				return errors.New("usage: bpo conformance <stage> [--phase K] -- <command...> (the command goes after --)")
			}
			if shards < 1 {
				return fmt.Errorf("--shards must be >= 1, got %d", shards)
			}
			dir, err := os.MkdirTemp("", "bpo-conformance-")
			if err != nil {
				return err
			}
			if keep {
				fmt.Fprintf(cmd.ErrOrStderr(), "fixture kept in %s\n", dir)
			} else {
				defer os.RemoveAll(dir)
			}
			f, err := stage.Prepare(dir, args[0], phase, stage.FixtureRun(int32(shards)))
			if err != nil {
				return err
			}
			rep, err := stage.Conform(cmd.Context(), f, args[1:], cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			rep.Print(cmd.OutOrStdout())
			if !rep.Passed() {
				return fmt.Errorf("conformance: %s failed", strings.Join(rep.Failed(), ", "))
			}
			return nil
		},
	}
	c.Flags().IntVar(&phase, "phase", 1, "phase K of the stage under test (eval also takes 0)")
	c.Flags().IntVar(&shards, "shards", 2, "sample and label shards (completions) of the fixture run")
	c.Flags().BoolVar(&keep, "keep", false, "keep the fixture folder for inspection")
	return c
}
