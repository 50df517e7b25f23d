#!/usr/bin/env bash
# Build the Kubernetes control-plane binaries used by envtest and the e2e harness from the Go module
# proxy (no prebuilt binary can be downloaded here) and cache them outside the clone.
#
#   hack/k8s-binaries.sh                # etcd kube-apiserver kube-controller-manager kube-scheduler kubectl
#   hack/k8s-binaries.sh --only envtest # etcd kube-apiserver kubectl (enough for envtest)
#
# The last line on stdout is the folder holding the binaries (usable as KUBEBUILDER_ASSETS);
# all progress goes to stderr. Returns at once when the binaries exist and run.
# Cache: ${BPO_CACHE:-$HOME/.cache/bpo}/k8s-<version>/ ; throwaway build modules in
# ${BPO_CACHE:-$HOME/.cache/bpo}/build/. A flock serialises parallel callers.
set -euo pipefail

K8S_VERSION=1.37.2
STAGING_VERSION=0.37.2
ETCD_VERSION=3.7.3

usage() { sed -n '2,11s/^# \{0,1\}//p' "$0" >&2; }

set_name=all
while [[ $# -gt 0 ]]; do
  case "$1" in
    --only) set_name="${2:-}"; shift 2 || { usage; exit 2; } ;;
    --only=*) set_name="${1#--only=}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "k8s-binaries: unknown argument: $1" >&2; usage; exit 2 ;;
  esac
done
case "$set_name" in
  envtest) BINS=(etcd kube-apiserver kubectl) ;;
  all) BINS=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl) ;;
  *) echo "k8s-binaries: --only accepts 'envtest' (got '$set_name')" >&2; exit 2 ;;
esac

CACHE="${BPO_CACHE:-$HOME/.cache/bpo}"
OUT="$CACHE/k8s-$K8S_VERSION"
BUILD="$CACHE/build"
log() { echo "k8s-binaries: $*" >&2; }

# check_bin NAME: the binary exists, runs, and reports the expected version.
check_bin() {
  local b="$OUT/$1" out want
  [[ -x "$b" ]] || return 1
  case "$1" in
    etcd) want="$ETCD_VERSION"; out=$("$b" --version 2>&1) || return 1 ;;
    kubectl) want="v$K8S_VERSION"; out=$("$b" version --client 2>&1) || return 1 ;;
    *) want="v$K8S_VERSION"; out=$("$b" --version 2>&1) || return 1 ;;
  esac
  [[ "$out" == *"$want"* ]]
}

missing() {
  local m=() b
  for b in "${BINS[@]}"; do check_bin "$b" || m+=("$b"); done
  echo "${m[@]+"${m[@]}"}"
}

todo=$(missing)
if [[ -z "$todo" ]]; then
  echo "$OUT"
  exit 0
fi

command -v go >/dev/null || { log "go is not on PATH"; exit 1; }
mkdir -p "$OUT" "$BUILD"
exec 9>"$CACHE/k8s-$K8S_VERSION.lock"
if ! flock -n 9; then
  log "another build holds $CACHE/k8s-$K8S_VERSION.lock; waiting"
  flock 9
fi
todo=$(missing)   # someone else may have built them while we waited
if [[ -z "$todo" ]]; then
  echo "$OUT"
  exit 0
fi
log "building into $OUT: $todo"
start=$SECONDS

# The throwaway modules must not see a go.work or the caller's module settings.
export GOWORK=off GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0 GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

build_etcd() {
  local dir="$BUILD/etcd-$ETCD_VERSION" t=$SECONDS
  log "etcd v$ETCD_VERSION: preparing module in $dir"
  mkdir -p "$dir"
  (
    cd "$dir"
    [[ -f go.mod ]] || go mod init bpo.local/etcd-build >&2
    go get -tool "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >&2
    log "etcd: compiling"
    go build -trimpath -ldflags "-s -w" -o "$OUT/.etcd.tmp" go.etcd.io/etcd/server/v3 >&2
  )
  mv -f "$OUT/.etcd.tmp" "$OUT/etcd"
  log "etcd built in $((SECONDS - t))s"
}

kube_pkg() {
  case "$1" in
    kubectl) echo k8s.io/kubernetes/cmd/kubectl ;;
    *) echo "k8s.io/kubernetes/cmd/$1" ;;
  esac
}

prepare_kube_module() {
  local dir="$1" gomod k8smod
  mkdir -p "$dir"
  gomod="$dir/go.mod"
  if [[ -f "$gomod" ]] && grep -q "k8s.io/kubernetes v$K8S_VERSION" "$gomod"; then
    return 0
  fi
  log "kubernetes v$K8S_VERSION: generating build module in $dir"
  k8smod=$(cd "$dir" && go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
  [[ -f "$k8smod" ]] || { log "could not locate kubernetes' go.mod ($k8smod)"; return 1; }
  {
    echo "module bpo.local/k8s-build"
    echo
    grep -m1 '^go ' "$k8smod"
    echo
    # keep kubernetes' own godebug settings (default=go1.26)
    if grep -q '^godebug' "$k8smod"; then grep '^godebug' "$k8smod"; else echo "godebug default=go1.26"; fi
    echo
    echo "require k8s.io/kubernetes v$K8S_VERSION"
    echo
    echo "replace ("
    # every staging module kubernetes replaces with a local folder -> the published v0.x release
    sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\)[[:space:]]*=>[[:space:]]*\./staging/.*#\1#p' "$k8smod" |
      grep -v -e '^k8s.io/sample-cli-plugin$' -e '^k8s.io/sample-controller$' |
      while read -r m; do printf '\t%s => %s v%s\n' "$m" "$m" "$STAGING_VERSION"; done
    echo ")"
  } > "$gomod.new"
  local n; n=$(grep -c '=> k8s.io/' "$gomod.new" || true)
  [[ "$n" -gt 20 ]] || { log "generated only $n replace lines; refusing"; return 1; }
  mv "$gomod.new" "$gomod"
  rm -f "$dir/go.sum"
  log "kubernetes: $n staging replaces generated"
}

build_kube() {
  local dir="$BUILD/kubernetes-$K8S_VERSION" t=$SECONDS b pkgs=() ldflags p
  prepare_kube_module "$dir"
  for b in "$@"; do pkgs+=("$(kube_pkg "$b")@v$K8S_VERSION"); done
  (cd "$dir" && log "kubernetes: go get -tool ${pkgs[*]}" && go get -tool "${pkgs[@]}" >&2)
  ldflags="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=${K8S_VERSION%%.*}"
    ldflags+=" -X $p.gitMinor=$(cut -d. -f2 <<<"$K8S_VERSION") -X $p.gitTreeState=clean"
    ldflags+=" -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  for b in "$@"; do
    t=$SECONDS
    log "$b: compiling"
    (cd "$dir" && go build -trimpath -ldflags "$ldflags" -o "$OUT/.$b.tmp" "$(kube_pkg "$b")" >&2)
    mv -f "$OUT/.$b.tmp" "$OUT/$b"
    log "$b built in $((SECONDS - t))s"
  done
}

kube=()
for b in $todo; do
  if [[ "$b" == etcd ]]; then build_etcd; else kube+=("$b"); fi
done
[[ ${#kube[@]} -eq 0 ]] || build_kube "${kube[@]}"

todo=$(missing)
if [[ -n "$todo" ]]; then
  log "built, but these do not run or report the wrong version: $todo"
  exit 1
fi
for b in "${BINS[@]}"; do
  case "$b" in
    kubectl) log "$b: $("$OUT/$b" version --client 2>&1 | head -1)" ;;
    *) log "$b: $("$OUT/$b" --version 2>&1 | head -1)" ;;
  esac
done
log "done in $((SECONDS - start))s; $(du -sh "$OUT" 2>/dev/null | cut -f1) in $OUT"
echo "$OUT"
