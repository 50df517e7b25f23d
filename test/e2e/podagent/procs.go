package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// markerEnv is set in every container process so that an agent restarted on the same --root can
// recognise (and kill) the processes a previous agent left behind.
const markerEnv = "PODAGENT_POD_UID"

// groupMembers lists the live (non-zombie) processes of process group pgid.
func groupMembers(pgid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...; comm may contain spaces and parentheses
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		if g, err := strconv.Atoi(f[2]); err == nil && g == pgid {
			out = append(out, pid)
		}
	}
	return out
}

func hasMarker(pid int, uid string) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "environ"))
	if err != nil {
		return false
	}
	want := []byte(markerEnv + "=" + uid)
	for _, kv := range bytes.Split(b, []byte{0}) {
		if bytes.Equal(kv, want) {
			return true
		}
	}
	return false
}

// killLeftovers SIGKILLs the processes that a previous agent started under --root (found through
// the pods/<uid>/*.pid files and checked by the marker variable) and that outlived it: the direct
// child dies with its agent (Pdeathsig), but what it started does not.
func (a *agent) killLeftovers() {
	files, _ := filepath.Glob(filepath.Join(a.opts.root, "pods", "*", "*.pid"))
	for _, f := range files {
		uid := filepath.Base(filepath.Dir(f))
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		pgid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pgid <= 1 {
			continue
		}
		killed := 0
		for _, pid := range groupMembers(pgid) {
			if hasMarker(pid, uid) && syscall.Kill(pid, syscall.SIGKILL) == nil {
				killed++
			}
		}
		if killed > 0 {
			a.log.Info("killed processes left by a previous agent", "podUID", uid, "pgid", pgid, "processes", killed)
		}
		_ = os.Remove(f)
	}
}
