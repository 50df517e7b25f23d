package chart

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	alignv1 "github.com/bpo-dev/bpo/api/v1alpha1"
	"github.com/bpo-dev/bpo/controllers"
	"github.com/bpo-dev/bpo/controllers/testutil"
)

// There is no Docker engine here, so the Dockerfiles are checked by parsing them and by
// replaying their builder stage: the files the builder COPYs are copied into a scratch
// "context", the RUN's exact `go build` command runs there with the stage's ENV, and the
// binary is checked (stripped, runs; the manager static for distroless, bpo built with cgo for
// dlopen-ing OpenBLAS on Debian slim). The final stage must run a numeric non-root USER and put
// the binary where the Deployment (`/manager`) and the controller's stage Jobs (`bpo`, on PATH)
// expect it.

// distrolessPath is the PATH of gcr.io/distroless images.
const distrolessPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

type instruction struct {
	cmd   string   // upper case: FROM, RUN, COPY, ...
	flags []string // leading --flags (FROM, RUN, COPY, ADD)
	rest  string   // the rest of the line
	line  int
}

type stage struct {
	name      string
	from      string   // image, global ARGs expanded
	fromFlags []string // --platform=... of the FROM line
	instrs    []instruction
}

type dockerfile struct {
	path       string
	globalArgs map[string]string
	stages     []stage
}

// parseDockerfile reads the subset of the Dockerfile syntax the project uses: comments,
// line continuations, global ARGs, stages.
func parseDockerfile(t *testing.T, p string) *dockerfile {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	df := &dockerfile{path: p, globalArgs: map[string]string{}}
	var logical []instruction
	var cur strings.Builder
	start := 0
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if cur.Len() == 0 {
			start = n
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cur.WriteString(trimmed)
		text := cur.String()
		cur.Reset()
		cmd, rest, _ := strings.Cut(text, " ")
		in := instruction{cmd: strings.ToUpper(cmd), rest: strings.TrimSpace(rest), line: start}
		if slices.Contains([]string{"FROM", "RUN", "COPY", "ADD"}, in.cmd) {
			for strings.HasPrefix(in.rest, "--") {
				flag, r, _ := strings.Cut(in.rest, " ")
				in.flags = append(in.flags, flag)
				in.rest = strings.TrimSpace(r)
			}
		}
		logical = append(logical, in)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if cur.Len() > 0 {
		t.Fatalf("%s: dangling line continuation", p)
	}
	for _, in := range logical {
		switch {
		case in.cmd == "ARG" && len(df.stages) == 0:
			k, v, _ := strings.Cut(in.rest, "=")
			df.globalArgs[k] = strings.Trim(v, `"`)
		case in.cmd == "FROM":
			fields := strings.Fields(in.rest)
			s := stage{from: expand(fields[0], df.globalArgs), fromFlags: in.flags}
			if len(fields) == 3 && strings.EqualFold(fields[1], "AS") {
				s.name = fields[2]
			}
			df.stages = append(df.stages, s)
		case len(df.stages) == 0:
			t.Fatalf("%s:%d: %s before the first FROM", p, in.line, in.cmd)
		default:
			df.stages[len(df.stages)-1].instrs = append(df.stages[len(df.stages)-1].instrs, in)
		}
	}
	if len(df.stages) == 0 {
		t.Fatalf("%s: no FROM", p)
	}
	return df
}

var varRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:([-+])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)`)

// expand substitutes ${VAR}, ${VAR:-default}, ${VAR:+alternative} (itself expanded) and $VAR.
func expand(s string, vars map[string]string) string {
	return varRef.ReplaceAllStringFunc(s, func(m string) string {
		sub := varRef.FindStringSubmatch(m)
		v := vars[sub[1]+sub[5]]
		switch {
		case sub[3] == "+" && v != "":
			return expand(sub[4], vars)
		case sub[3] == "+" || v != "":
			return v
		}
		return sub[4]
	})
}

// shellWords splits a command line like sh would (quotes, backslashes; no expansion).
func shellWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	var quote rune
	for i := 0; i < len(s); i++ {
		ch := rune(s[i])
		switch {
		case quote != 0:
			if ch == quote {
				quote = 0
			} else if ch == '\\' && quote == '"' && i+1 < len(s) {
				i++
				cur.WriteByte(s[i])
			} else {
				cur.WriteRune(ch)
			}
		case ch == '\'' || ch == '"':
			quote, inWord = ch, true
		case ch == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
			inWord = true
		case ch == ' ' || ch == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(ch)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated quote in %q", s)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// envPairs parses `ENV k=v k2="v 2"` (and the legacy `ENV k v`).
func envPairs(rest string) (map[string]string, error) {
	out := map[string]string{}
	if !strings.Contains(strings.Fields(rest)[0], "=") {
		k, v, _ := strings.Cut(rest, " ")
		out[k] = strings.TrimSpace(v)
		return out, nil
	}
	words, err := shellWords(rest)
	if err != nil {
		return nil, err
	}
	for _, w := range words {
		k, v, ok := strings.Cut(w, "=")
		if !ok {
			return nil, fmt.Errorf("ENV word %q has no =", w)
		}
		out[k] = v
	}
	return out, nil
}

// goBuild is the `go build` of a builder stage.
type goBuild struct {
	env     map[string]string // assignments before `go` (already expanded)
	args    []string          // after `go build`
	output  string            // -o
	pkg     string            // the package built
	ldflags string
	trim    bool
}

// image is what the test derives from one Dockerfile.
type image struct {
	df       *dockerfile
	builder  *stage
	final    *stage
	build    goBuild
	stageEnv map[string]string // builder ENV
	binary   string            // absolute path of the binary in the final image
	user     string
	path     string // PATH of the final image
	entry    []string
}

func analyze(t *testing.T, file string) *image {
	t.Helper()
	df := parseDockerfile(t, filepath.Join(repoRoot, file))
	img := &image{df: df, final: &df.stages[len(df.stages)-1], stageEnv: map[string]string{}}
	for i := range df.stages {
		s := &df.stages[i]
		for _, in := range s.instrs {
			if in.cmd == "RUN" && strings.Contains(in.rest, "go build") {
				if img.builder != nil {
					t.Fatalf("%s: more than one RUN with go build", file)
				}
				img.builder = s
				img.build = parseGoBuild(t, file, in)
			}
		}
	}
	if img.builder == nil {
		t.Fatalf("%s: no RUN ... go build", file)
	}
	if img.builder == img.final {
		t.Fatalf("%s: the go build runs in the final stage; want a multi-stage build", file)
	}
	for _, in := range img.builder.instrs {
		if in.cmd == "ENV" {
			kv, err := envPairs(in.rest)
			if err != nil {
				t.Fatalf("%s:%d: %v", file, in.line, err)
			}
			for k, v := range kv {
				img.stageEnv[k] = v
			}
		}
	}
	for _, in := range img.final.instrs {
		switch in.cmd {
		case "USER":
			img.user = strings.TrimSpace(in.rest)
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(in.rest), &img.entry); err != nil {
				t.Errorf("%s:%d: ENTRYPOINT must be JSON (exec form): %v", file, in.line, err)
			}
		case "ENV":
			kv, err := envPairs(in.rest)
			if err != nil {
				t.Fatalf("%s:%d: %v", file, in.line, err)
			}
			if p, ok := kv["PATH"]; ok {
				img.path = p
			}
		case "COPY":
			from := ""
			for _, f := range in.flags {
				if v, ok := strings.CutPrefix(f, "--from="); ok {
					from = v
				}
			}
			words := strings.Fields(in.rest)
			if from == img.builder.name && len(words) == 2 && words[0] == img.build.output {
				img.binary = words[1]
			}
		}
	}
	if img.path == "" && strings.HasPrefix(img.final.from, "gcr.io/distroless/") {
		img.path = distrolessPath
	}
	return img
}

func parseGoBuild(t *testing.T, file string, in instruction) goBuild {
	t.Helper()
	words, err := shellWords(in.rest)
	if err != nil {
		t.Fatalf("%s:%d: %v", file, in.line, err)
	}
	b := goBuild{env: map[string]string{}}
	i := 0
	for ; i < len(words) && strings.Contains(words[i], "=") && !strings.HasPrefix(words[i], "-"); i++ {
		k, v, _ := strings.Cut(words[i], "=")
		b.env[k] = v
	}
	if i+1 >= len(words) || words[i] != "go" || words[i+1] != "build" {
		t.Fatalf("%s:%d: want `[VAR=value ...] go build ...` as the whole RUN, got %q", file, in.line, in.rest)
	}
	b.args = words[i+2:]
	for j := 0; j < len(b.args); j++ {
		switch a := b.args[j]; {
		case a == "-trimpath":
			b.trim = true
		case a == "-o" && j+1 < len(b.args):
			j++
			b.output = b.args[j]
		case a == "-ldflags" && j+1 < len(b.args):
			j++
			b.ldflags = b.args[j]
		case strings.HasPrefix(a, "-ldflags="):
			b.ldflags = strings.TrimPrefix(a, "-ldflags=")
		case strings.HasPrefix(a, "-"):
		default:
			if b.pkg != "" {
				t.Fatalf("%s:%d: more than one package: %s %s", file, in.line, b.pkg, a)
			}
			b.pkg = a
		}
	}
	return b
}

type imageSpec struct {
	file, pkg, binary string
	// versionVar is the -X target of the VERSION build argument; version the binary's
	// --version output for a VERSION of imageTestVersion.
	versionVar, version string
	// cgo: built with CGO_ENABLED=1 onto a Debian slim base that installs exactly these apt
	// packages (the shared libraries the binary dlopens); else CGO_ENABLED=0 onto distroless
	// static (or scratch).
	cgo      bool
	packages []string
}

var images = []imageSpec{
	{file: "Dockerfile.manager", pkg: "./cmd/manager", binary: "/manager",
		versionVar: "github.com/bpo-dev/bpo/controllers.Version", version: "manager " + imageTestVersion + " (default stage image ghcr.io/bpo-dev/bpo:" + imageTestVersion + ")"},
	// trainer/blas dlopens Debian's OpenBLAS (libopenblas.so.0).
	{file: "Dockerfile.bpo", pkg: "./cmd/bpo", binary: "/usr/local/bin/bpo", cgo: true, packages: []string{"libopenblas0-pthread"},
		versionVar: "main.version", version: "bpo version " + imageTestVersion},
}

func (s imageSpec) cgoEnabled() string {
	if s.cgo {
		return "1"
	}
	return "0"
}

// debianRelease is the Debian codename of an image reference: golang:1.26-bookworm and
// debian:bookworm-slim give "bookworm"; "" when the tag names none.
func debianRelease(image string) string {
	_, tag, _ := strings.Cut(path.Base(image), ":")
	tag, _, _ = strings.Cut(tag, "@")
	for _, r := range []string{"buster", "bullseye", "bookworm", "trixie", "forky"} {
		if slices.Contains(strings.Split(tag, "-"), r) {
			return r
		}
	}
	return ""
}

// aptInstalls returns the packages that the stage's RUNs `apt-get install`, and whether each such
// install passes --no-install-recommends and the RUN removes the apt lists afterwards.
func aptInstalls(t *testing.T, s *stage) (pkgs []string, lean bool) {
	t.Helper()
	lean = true
	for _, in := range s.instrs {
		if in.cmd != "RUN" || !strings.Contains(in.rest, "apt-get") {
			continue
		}
		for _, cmd := range strings.Split(in.rest, "&&") {
			words, err := shellWords(strings.TrimSpace(cmd))
			if err != nil {
				t.Fatalf("line %d: %v", in.line, err)
			}
			for len(words) > 0 && strings.Contains(words[0], "=") { // VAR=value prefixes
				words = words[1:]
			}
			i := slices.Index(words, "install")
			if len(words) == 0 || words[0] != "apt-get" || i < 0 {
				continue
			}
			if !slices.Contains(words, "--no-install-recommends") {
				lean = false
			}
			for _, w := range words[i+1:] {
				if !strings.HasPrefix(w, "-") {
					pkgs = append(pkgs, w)
				}
			}
			if !strings.Contains(in.rest, "rm -rf /var/lib/apt/lists/*") {
				lean = false
			}
		}
	}
	return pkgs, lean
}

// TestDockerfiles checks both Dockerfiles without building them.
func TestDockerfiles(t *testing.T) {
	t.Parallel()
	for _, spec := range images {
		t.Run(spec.file, func(t *testing.T) {
			t.Parallel()
			img := analyze(t, spec.file)
			// Builder: golang 1.26, trimmed, stripped; cgo only where the spec says.
			if !strings.HasPrefix(img.builder.from, "golang:1.26") {
				t.Errorf("builder FROM %q, want golang:1.26*", img.builder.from)
			}
			if img.build.env["CGO_ENABLED"] != spec.cgoEnabled() || !img.build.trim || !slices.Equal(strings.Fields(expand(img.build.ldflags, nil)), []string{"-s", "-w"}) {
				t.Errorf("go build: env %v trimpath %v ldflags %q; want CGO_ENABLED=%s -trimpath -ldflags \"-s -w\"", img.build.env, img.build.trim, img.build.ldflags, spec.cgoEnabled())
			}
			// The VERSION build argument, when given, is stamped where the binary reads it.
			if got, want := strings.Fields(expand(img.build.ldflags, map[string]string{"VERSION": "1.2.3"})), []string{"-s", "-w", "-X", spec.versionVar + "=1.2.3"}; !slices.Equal(got, want) {
				t.Errorf("go build -ldflags with --build-arg VERSION=1.2.3: %q, want %q", got, want)
			}
			if img.build.pkg != spec.pkg {
				t.Errorf("builds %q, want %q", img.build.pkg, spec.pkg)
			}
			if _, err := os.Stat(filepath.Join(repoRoot, spec.pkg, "main.go")); err != nil {
				t.Errorf("package %s: %v", spec.pkg, err)
			}
			// Final stage: distroless static (or scratch) for a static binary; for a cgo binary,
			// Debian slim of the builder's release (the binary needs no newer glibc than the image
			// has), installing exactly the packages it needs, and a builder that runs on the target
			// platform (cgo does not cross-compile from $BUILDPLATFORM without a cross toolchain).
			pkgs, lean := aptInstalls(t, img.final)
			if !spec.cgo {
				if f := img.final.from; f != "scratch" && !(strings.HasPrefix(f, "gcr.io/distroless/static") && strings.Contains(f, "nonroot")) {
					t.Errorf("final FROM %q, want gcr.io/distroless/static*:nonroot or scratch", f)
				}
			} else {
				rel := debianRelease(img.final.from)
				if !strings.HasPrefix(img.final.from, "debian:") || !strings.Contains(img.final.from, "-slim") || rel == "" {
					t.Errorf("final FROM %q, want debian:<release>-slim", img.final.from)
				}
				if b := debianRelease(img.builder.from); b != rel {
					t.Errorf("builder FROM %q (Debian %q) and final FROM %q (Debian %q): want the same release, so the cgo binary's glibc matches", img.builder.from, b, img.final.from, rel)
				}
				for _, f := range img.builder.fromFlags {
					if strings.Contains(f, "BUILDPLATFORM") {
						t.Errorf("builder FROM %s: a cgo build must run on the target platform", f)
					}
				}
				if !lean {
					t.Errorf("apt-get install without --no-install-recommends or without removing /var/lib/apt/lists")
				}
			}
			if !slices.Equal(pkgs, spec.packages) {
				t.Errorf("the final stage installs %q, want exactly %q", pkgs, spec.packages)
			}
			uid, _, _ := strings.Cut(img.user, ":")
			if n, err := strconv.Atoi(uid); err != nil || n == 0 {
				t.Errorf("final USER %q: want a numeric non-zero uid (the kubelet can only verify runAsNonRoot for numeric users)", img.user)
			}
			if img.binary != spec.binary {
				t.Errorf("the binary lands at %q, want %q", img.binary, spec.binary)
			}
			if len(img.entry) == 0 || img.entry[0] != img.binary {
				t.Errorf("ENTRYPOINT %v, want [%s]", img.entry, img.binary)
			}
			// Every file copied from the context exists.
			for _, s := range img.df.stages {
				for _, in := range s.instrs {
					if in.cmd != "COPY" || slices.ContainsFunc(in.flags, func(f string) bool { return strings.HasPrefix(f, "--from=") }) {
						continue
					}
					words := strings.Fields(in.rest)
					for _, src := range words[:len(words)-1] {
						if _, err := os.Stat(filepath.Join(repoRoot, src)); err != nil {
							t.Errorf("%s:%d: COPY source %s: %v", spec.file, in.line, src, err)
						}
					}
				}
			}
			// The builder copies every package of the module that the binary imports.
			copied := builderCopies(t, img)
			for _, dir := range moduleDeps(t, spec.pkg, spec.cgoEnabled()) {
				if !slices.ContainsFunc(copied, func(c string) bool { return dir == c || strings.HasPrefix(dir, c+"/") }) {
					t.Errorf("%s imports %s, which the builder stage does not COPY (copies %v)", spec.pkg, dir, copied)
				}
			}
			for _, f := range []string{"go.mod", "go.sum"} {
				if !slices.Contains(copied, f) {
					t.Errorf("the builder stage does not COPY %s", f)
				}
			}
		})
	}
	// The manager binary is where the Deployments run it: config/manager (kustomize) and the chart.
	mgr := analyze(t, "Dockerfile.manager")
	kust := readManifests(t, filepath.Join(repoRoot, "config", "manager", "manager.yaml")).one(t, "Deployment")
	if c := strList(field(kust.Object, "spec", "template", "spec", "containers", "[0]", "command")); len(c) == 0 || c[0] != mgr.binary {
		t.Errorf("config/manager/manager.yaml runs %v, Dockerfile.manager installs %s", c, mgr.binary)
	}
	t.Run("chart command", func(t *testing.T) {
		t.Parallel()
		cmd := strList(managerContainer(t, render(t, renderArgs{}))["command"])
		if len(cmd) == 0 || cmd[0] != mgr.binary {
			t.Errorf("the chart's Deployment runs %v, Dockerfile.manager installs %s", cmd, mgr.binary)
		}
	})
}

// builderCopies lists the context paths (relative, cleaned) that the builder stage COPYs.
func builderCopies(t *testing.T, img *image) []string {
	t.Helper()
	var out []string
	for _, in := range img.builder.instrs {
		if in.cmd != "COPY" {
			continue
		}
		words := strings.Fields(in.rest)
		for _, src := range words[:len(words)-1] {
			out = append(out, path.Clean(src))
		}
	}
	return out
}

// moduleDeps lists the repository folders (relative) of the module packages pkg imports, for
// linux with the image build's CGO_ENABLED.
func moduleDeps(t *testing.T, pkg, cgo string) []string {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.Dir}}{{end}}", pkg)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED="+cgo, "GOOS=linux", "GOFLAGS=-mod=mod")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v\n%s", pkg, err, stderr.String())
	}
	var dirs []string
	for _, d := range strings.Fields(string(out)) {
		if rel, err := filepath.Rel(repoRoot, d); err == nil && !strings.HasPrefix(rel, "..") {
			dirs = append(dirs, filepath.ToSlash(rel))
		}
	}
	if len(dirs) == 0 {
		t.Fatalf("go list -deps %s found no package of the module", pkg)
	}
	return dirs
}

var builds sync.Map // file -> *builtImage

type builtImage struct {
	once sync.Once
	dir  string
	bin  string
	err  error
	// How the binary was built, to build other packages of the replayed context the same way.
	workdir string
	env     []string
	args    []string // go build arguments without -o and the package
}

// removeBuilds deletes the replayed build contexts (called by TestMain).
func removeBuilds() {
	builds.Range(func(_, v any) bool {
		if b := v.(*builtImage); b.dir != "" {
			os.RemoveAll(b.dir)
		}
		return true
	})
}

// imageTestVersion is the VERSION build argument of the replayed image builds.
const imageTestVersion = "0.0.0-image"

// buildImage replays the builder stage of a Dockerfile outside Docker and returns the binary:
// the COPYed files go into a scratch context, and the RUN's `go build` runs there with the
// stage's ENV and the RUN's variables (TARGETOS/TARGETARCH as BuildKit sets them for the host).
func buildImage(t *testing.T, spec imageSpec) string {
	t.Helper()
	v, _ := builds.LoadOrStore(spec.file, &builtImage{})
	b := v.(*builtImage)
	b.once.Do(func() {
		img := analyze(t, spec.file)
		dir, err := os.MkdirTemp("", "bpo-image-build-")
		if err != nil {
			b.err = err
			return
		}
		b.dir = dir
		workdir := dir
		for _, in := range img.builder.instrs {
			switch in.cmd {
			case "WORKDIR":
				workdir = filepath.Join(dir, strings.TrimSpace(in.rest))
				if err := os.MkdirAll(workdir, 0o755); err != nil {
					b.err = err
					return
				}
			case "COPY":
				words := strings.Fields(in.rest)
				dst := words[len(words)-1]
				for _, src := range words[:len(words)-1] {
					if err := copyInto(filepath.Join(repoRoot, src), workdir, dst); err != nil {
						b.err = fmt.Errorf("%s:%d: COPY %s %s: %w", spec.file, in.line, src, dst, err)
						return
					}
				}
			}
		}
		vars := map[string]string{"TARGETOS": "linux", "TARGETARCH": runtime.GOARCH, "VERSION": imageTestVersion}
		env := os.Environ()
		for k, v := range img.stageEnv {
			env = append(env, k+"="+expand(v, vars))
		}
		for k, v := range img.build.env {
			env = append(env, k+"="+expand(v, vars))
		}
		out := filepath.Join(dir, "out", filepath.Base(img.build.output))
		args := []string{"build"}
		for i := 0; i < len(img.build.args); i++ {
			a := expand(img.build.args[i], vars) // the shell expands the RUN's build arguments
			if a == "-o" {
				args = append(args, "-o", out)
				i++
				continue
			}
			args = append(args, a)
		}
		cmd := exec.Command("go", args...)
		cmd.Dir = workdir
		cmd.Env = append(env, "GOWORK=off", "GOFLAGS=-mod=readonly")
		if o, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("%s: go %s in the replayed context: %v\n%s", spec.file, strings.Join(args, " "), err, o)
			return
		}
		b.bin = out
		b.workdir, b.env = workdir, cmd.Env
		b.args = slices.DeleteFunc(slices.Clone(args), func(a string) bool { return a == img.build.pkg })
		if i := slices.Index(b.args, "-o"); i >= 0 {
			b.args = slices.Delete(b.args, i, i+2)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.bin
}

// copyInto copies src (file or folder) to dst resolved against workdir, like Dockerfile COPY:
// a folder's contents go into dst; a file goes into dst when dst ends in '/'.
func copyInto(src, workdir, dst string) error {
	target := dst
	if !filepath.IsAbs(target) {
		target = filepath.Join(workdir, dst)
	}
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		if strings.HasSuffix(dst, "/") || dst == "." {
			target = filepath.Join(target, filepath.Base(src))
		}
		return copyFile(src, target)
	}
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(target, rel), 0o755)
		}
		return copyFile(p, filepath.Join(target, rel))
	})
}

func copyFile(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// TestImageBuilds replays each builder stage and checks the binary: stripped, it starts, and it
// runs on its base image: a static binary (no interpreter, no shared libraries) for distroless
// static, a cgo binary for Debian slim that needs only glibc (libraries such as OpenBLAS are
// dlopen-ed, not linked, so the binary starts without them).
func TestImageBuilds(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the image builds")
	}
	t.Parallel()
	for _, spec := range images {
		t.Run(spec.file, func(t *testing.T) {
			t.Parallel()
			bin := buildImage(t, spec)
			f, err := elf.Open(bin)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			interp := slices.ContainsFunc(f.Progs, func(p *elf.Prog) bool { return p.Type == elf.PT_INTERP })
			libs, _ := f.ImportedLibraries()
			if !spec.cgo {
				if interp {
					t.Errorf("%s is dynamically linked (has an ELF interpreter)", bin)
				}
				if len(libs) > 0 {
					t.Errorf("%s needs shared libraries %v", bin, libs)
				}
			} else {
				if !interp {
					t.Errorf("%s has no ELF interpreter: not a cgo build", bin)
				}
				for _, l := range libs {
					if !slices.Contains([]string{"libc.so.6", "libdl.so.2", "libpthread.so.0", "libm.so.6"}, l) {
						t.Errorf("%s links %s; want glibc only (OpenBLAS is dlopen-ed at run time)", bin, l)
					}
				}
			}
			if f.Section(".symtab") != nil {
				t.Errorf("%s has a symbol table: -ldflags -s did not apply", bin)
			}
			out, err := exec.Command(bin, "--version").CombinedOutput()
			if got := strings.TrimSpace(string(out)); err != nil || got != spec.version {
				t.Errorf("%s --version built with --build-arg VERSION=%s: %q (%v), want %q", filepath.Base(bin), imageTestVersion, got, err, spec.version)
			}
			out, err = exec.Command(bin, "--help").CombinedOutput()
			if err != nil {
				t.Fatalf("%s --help: %v\n%s", filepath.Base(bin), err, out)
			}
			if spec.file == "Dockerfile.bpo" {
				for _, sub := range []string{"sample", "label", "train", "eval"} {
					if !strings.Contains(string(out), sub) {
						t.Errorf("bpo --help does not list %q:\n%s", sub, out)
					}
				}
			}
		})
	}
}

// blasProbe prints trainer/blas's Backend() and checks one Gemm against a hand computation.
const blasProbe = `package main

import (
	"encoding/json"
	"os"

	"github.com/bpo-dev/bpo/trainer/blas"
)

func main() {
	a, b, c := []float32{1, 2, 3, 4}, []float32{5, 6, 7, 8}, make([]float32, 4)
	blas.Gemm(false, false, 2, 2, 2, 1, a, 2, b, 2, 0, c, 2)
	if c[0] != 19 || c[1] != 22 || c[2] != 43 || c[3] != 50 {
		os.Exit(3)
	}
	json.NewEncoder(os.Stdout).Encode(blas.Backend())
}
`

// TestImageBLASBackend: built the way Dockerfile.bpo builds bpo (same context, env and flags),
// trainer/blas loads OpenBLAS when the machine has Debian's libopenblas.so.0 (the image installs
// libopenblas0-pthread; .ci/run installs it too) on fast kernels, and falls back to gonum
// otherwise and with BPO_BLAS=gonum.
func TestImageBLASBackend(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: needs the bpo build")
	}
	t.Parallel()
	spec := images[1]
	buildImage(t, spec)
	v, _ := builds.Load(spec.file)
	b := v.(*builtImage)
	dir := filepath.Join(b.workdir, "cmd", "blasprobe")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(blasProbe), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(b.dir, "out", "blasprobe")
	cmd := exec.Command("go", append(append(slices.Clone(b.args), "-o", bin), "./cmd/blasprobe")...)
	cmd.Dir, cmd.Env = b.workdir, b.env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build the probe like %s: %v\n%s", spec.file, err, out)
	}
	type info struct{ Name, Library, CoreType, Reason string }
	probe := func(env ...string) info {
		t.Helper()
		cmd := exec.Command(bin)
		cmd.Env = append(slices.DeleteFunc(os.Environ(), func(e string) bool {
			return strings.HasPrefix(e, "BPO_BLAS=") || strings.HasPrefix(e, "OPENBLAS_")
		}), env...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("probe %v: %v\n%s", env, err, stderr.String())
		}
		var i info
		if err := json.Unmarshal(out, &i); err != nil {
			t.Fatalf("probe output %q: %v", out, err)
		}
		return i
	}
	if i := probe("BPO_BLAS=gonum"); i.Name != "gonum" {
		t.Errorf("BPO_BLAS=gonum: backend %+v", i)
	}
	got := probe()
	ldconfig, _ := exec.Command("ldconfig", "-p").Output()
	if !bytes.Contains(ldconfig, []byte("libopenblas.so.0")) {
		if got.Name != "gonum" {
			t.Errorf("no libopenblas.so.0 here, yet the backend is %+v", got)
		}
		t.Skipf("no libopenblas.so.0 on this machine (apt-get install libopenblas0-pthread): backend %+v", got)
	}
	if got.Name != "openblas" || got.Library == "" || got.CoreType == "" {
		t.Fatalf("libopenblas.so.0 is installed, but the backend is %+v", got)
	}
	if strings.Contains(got.Reason, "SLOW") {
		t.Errorf("OpenBLAS runs generic kernels: %+v", got)
	}
	t.Logf("backend %+v", got)
}

// TestChartFlagsExist: every flag the chart can pass to the manager exists in the binary built
// by Dockerfile.manager (the manager exits on unknown flags, which would crash-loop the pod).
func TestChartFlagsExist(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: needs the manager build")
	}
	t.Parallel()
	bin := buildImage(t, images[0])
	out, _ := exec.Command(bin, "-h").CombinedOutput() // flag's -h exits 0 or 2 depending on the Go version
	usage := string(out)
	seen := map[string]bool{}
	for _, c := range matrix {
		for name := range managerArgs(t, render(t, c.args)) {
			if seen[name] {
				continue
			}
			seen[name] = true
			if !strings.Contains(usage, "\n  -"+strings.TrimLeft(name, "-")+" ") && !strings.Contains(usage, "\n  -"+strings.TrimLeft(name, "-")+"\n") {
				t.Errorf("the chart passes %s, which `manager -h` does not list", name)
			}
		}
	}
	if len(seen) < 8 {
		t.Errorf("only %d distinct flags found in the matrix: %v", len(seen), seen)
	}
}

// TestStageJobCommandOnImagePath: the controller's stage Job runs `bpo`, which Dockerfile.bpo
// installs in a folder on the image's PATH. The Job comes from the real reconciler (fake client).
func TestStageJobCommandOnImagePath(t *testing.T) {
	t.Parallel()
	scheme := k8sruntime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := alignv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	run := testutil.MakeRun("ns", "img").Defaulted()
	run.UID, run.Generation = types.UID("uid-1"), 1
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(run).WithStatusSubresource(run).Build()
	r := &controllers.AlignmentRunReconciler{Client: c, Scheme: scheme, Recorder: events.NewFakeRecorder(1000),
		StageImage: "registry.example.com/bpo:test"}
	var jobs batchv1.JobList
	for i := 0; i < 5 && len(jobs.Items) == 0; i++ {
		if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: types.NamespacedName{Namespace: "ns", Name: "img"}}); err != nil {
			t.Fatalf("reconcile: %v", err)
		}
		if err := c.List(context.Background(), &jobs); err != nil {
			t.Fatal(err)
		}
	}
	if len(jobs.Items) == 0 {
		t.Fatal("the reconciler created no Job in 5 reconciles")
	}
	container := jobs.Items[0].Spec.Template.Spec.Containers[0]
	if container.Image != "registry.example.com/bpo:test" || len(container.Command) == 0 {
		t.Fatalf("stage container %s runs %v", container.Image, container.Command)
	}
	command := container.Command[0]

	img := analyze(t, "Dockerfile.bpo")
	if strings.Contains(command, "/") {
		if command != img.binary {
			t.Errorf("the Job runs %s, Dockerfile.bpo installs %s", command, img.binary)
		}
		return
	}
	if path.Base(img.binary) != command {
		t.Errorf("the Job runs %q, Dockerfile.bpo installs %s", command, img.binary)
	}
	if img.path == "" {
		t.Fatalf("Dockerfile.bpo's final image has no known PATH (set ENV PATH)")
	}
	if !slices.Contains(strings.Split(img.path, ":"), path.Dir(img.binary)) {
		t.Errorf("%s is not on the image's PATH %s", path.Dir(img.binary), img.path)
	}
	// Stage pods require a non-root user; the image must name it numerically (TestDockerfiles
	// checks the USER line) so that the kubelet can verify it.
	if sc := jobs.Items[0].Spec.Template.Spec.SecurityContext; sc != nil && sc.RunAsNonRoot != nil && *sc.RunAsNonRoot {
		if uid, _, _ := strings.Cut(img.user, ":"); uid == "" || uid == "0" || strings.Trim(uid, "0123456789") != "" {
			t.Errorf("stage pods set runAsNonRoot, but Dockerfile.bpo's USER is %q", img.user)
		}
	}
}

// TestBuiltinModelsEmbedded: the bpo binary embeds the built-in models (trainer/task's
// go:embed of models/), so the image needs no model files.
func TestBuiltinModelsEmbedded(t *testing.T) {
	t.Parallel()
	cmd := exec.Command("go", "list", "-deps", "-json=ImportPath,EmbedPatterns,EmbedFiles", "./cmd/bpo")
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED="+images[1].cgoEnabled(), "GOOS=linux", "GOFLAGS=-mod=mod")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	found := false
	for dec.More() {
		var p struct {
			ImportPath    string
			EmbedPatterns []string
			EmbedFiles    []string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		if p.ImportPath == "github.com/bpo-dev/bpo/trainer/task" {
			found = slices.Contains(p.EmbedPatterns, "all:models")
			var models []string
			for _, f := range p.EmbedFiles {
				if strings.HasSuffix(f, "/config.json") && strings.HasPrefix(f, "models/") {
					models = append(models, path.Dir(f))
				}
			}
			t.Logf("built-in models embedded in bpo: %v", models)
		}
	}
	if !found {
		t.Errorf("cmd/bpo does not import trainer/task with //go:embed all:models")
	}
}
