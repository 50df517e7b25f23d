package main

import "runtime/debug"

// version is bpo's version. Release builds set it with -ldflags "-X main.version=<version>"
// (the Makefile's VERSION, Dockerfile.bpo's VERSION build argument); without it, bpo reports
// the module version the Go toolchain stamped from the VCS, or "(devel)".
var version = ""

// bpoVersion is what `bpo --version` prints.
func bpoVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}
