#!/usr/bin/env bash
# Install the project's pinned Go tools into ${BPO_CACHE:-$HOME/.cache/bpo}/bin (go install, GOBIN).
#
#   hack/tools.sh                  # install all tools, print their paths (one a line) on stdout
#   hack/tools.sh controller-gen   # install if missing, print the path of that tool
#   hack/tools.sh --list           # print "name module@version" for every pinned tool
#
# Idempotent: a tool is reinstalled only when missing or built from another version
# (checked with `go version -m`). A flock serialises parallel callers. Progress goes to stderr.
set -euo pipefail

declare -A PKG=(
  [controller-gen]=sigs.k8s.io/controller-tools/cmd/controller-gen
  [helm]=helm.sh/helm/v3/cmd/helm
  [versitygw]=github.com/versity/versitygw/cmd/versitygw
)
declare -A VER=(
  [controller-gen]=v0.23.0
  [helm]=v3.22.0
  [versitygw]=v1.8.0
)
# Extra -ldflags (helm's version is otherwise reported as "v3.22" without the patch level,
# versitygw's as "git").
declare -A LDFLAGS=(
  [helm]="-X helm.sh/helm/v3/internal/version.version=v3.22.0 -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  [versitygw]="-X main.Version=v1.8.0"
)
# versitygw is an S3 server over a POSIX folder: the storage tests run against it on loopback.
ORDER=(controller-gen helm versitygw)

CACHE="${BPO_CACHE:-$HOME/.cache/bpo}"
BIN="$CACHE/bin"
log() { echo "tools: $*" >&2; }

if [[ "${1:-}" == --list ]]; then
  for t in "${ORDER[@]}"; do echo "$t ${PKG[$t]}@${VER[$t]}"; done
  exit 0
fi
if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then sed -n '2,10s/^# \{0,1\}//p' "$0" >&2; exit 0; fi

tools=("$@")
[[ ${#tools[@]} -gt 0 ]] || tools=("${ORDER[@]}")
for t in "${tools[@]}"; do
  [[ -n "${PKG[$t]:-}" ]] || { log "unknown tool '$t' (known: ${ORDER[*]})"; exit 2; }
done

# current TOOL: the installed binary exists and was built from the pinned module version
# (and with the pinned -ldflags).
current() {
  local b="$BIN/$1" info v
  [[ -x "$b" ]] || return 1
  info=$(go version -m "$b" 2>/dev/null) || return 1
  v=$(awk '$1 == "mod" {print $3; exit}' <<<"$info")
  [[ "$v" == "${VER[$1]}" ]] || return 1
  [[ -z "${LDFLAGS[$1]:-}" || "$info" == *"${LDFLAGS[$1]}"* ]]
}

need=()
for t in "${tools[@]}"; do current "$t" || need+=("$t"); done

if [[ ${#need[@]} -gt 0 ]]; then
  command -v go >/dev/null || { log "go is not on PATH"; exit 1; }
  mkdir -p "$BIN"
  exec 9>"$CACHE/tools.lock"
  flock -n 9 || { log "waiting for $CACHE/tools.lock"; flock 9; }
  for t in "${need[@]}"; do
    current "$t" && continue   # installed by someone else while we waited
    log "installing $t ${VER[$t]} into $BIN"
    start=$SECONDS
    # Install into a private folder, then rename: the visible binary is never half-written.
    tmp=$(mktemp -d "$BIN/.install.XXXXXX")
    GOBIN="$tmp" GOWORK=off GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0 GOTOOLCHAIN="${GOTOOLCHAIN:-local}" \
      go install -ldflags "${LDFLAGS[$t]:-}" "${PKG[$t]}@${VER[$t]}" >&2 || { rm -rf "$tmp"; log "install of $t failed"; exit 1; }
    mv -f "$tmp/$t" "$BIN/$t"
    rm -rf "$tmp"
    current "$t" || { log "$t installed but does not report ${VER[$t]}"; exit 1; }
    log "$t ${VER[$t]} installed in $((SECONDS - start))s"
  done
fi

for t in "${tools[@]}"; do echo "$BIN/$t"; done
