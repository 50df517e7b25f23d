package controllers

// Version is the operator's version. Release builds set it with
// -ldflags "-X github.com/bpo-dev/bpo/controllers.Version=<version>" (`make build VERSION=...`,
// by default the commit's git tag; Dockerfile.manager's --build-arg VERSION); the default is the
// version of the chart (Chart.yaml appVersion, checked by test/chart), so a plain `go build`
// still names a pinned stage image, never a moving tag such as :latest.
var Version = "0.1.0"

// StageImageRepository is the repository of the stage image (Dockerfile.bpo).
const StageImageRepository = "ghcr.io/bpo-dev/bpo"

// DefaultStageImage is the image of stage containers when neither the stage spec nor the
// --stage-image flag sets one: the stage image of the manager's own version. It is computed
// at start-up from Version, so the -ldflags value reaches it.
var DefaultStageImage = StageImageRepository + ":" + Version
