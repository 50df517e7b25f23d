package controllers

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"

	alignv1 "github.com/bpo-dev/bpo/api/v1alpha1"
)

// StagePolicy is what an AlignmentRun may change about the pods the operator runs for it: whoever
// may create a run otherwise chooses the image, the command and the environment (Secrets
// included) of pods in its namespace (docs/security.md). The manager's flags set it; the chart's
// stagePolicy values map onto them. The zero value is the strict default: the operator's own stage
// image only, no command or args override, no Secret in a stage's env.
type StagePolicy struct {
	// AllowedImages are image prefixes a stage may use besides the operator's stage image
	// repository (any tag or digest of it); "*" allows any image.
	AllowedImages []string
	// AllowCommand allows spec.<stage>.command and args.
	AllowCommand bool
	// AllowSecretEnv allows env entries of spec.<stage>.env that read a Secret (valueFrom.secretKeyRef).
	AllowSecretEnv bool
}

// repository is an image reference without its tag or digest.
func repository(image string) string {
	if i := strings.Index(image, "@"); i >= 0 {
		image = image[:i]
	}
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		image = image[:i]
	}
	return image
}

// Check lists the fields of spec the policy forbids, each with the flag that would allow it.
// stageImage is the operator's default stage image.
func (p StagePolicy) Check(spec *alignv1.AlignmentRunSpec, stageImage string) field.ErrorList {
	var errs field.ErrorList
	own := repository(stageImage)
	stages := []struct {
		name string
		tmpl *alignv1.StageTemplate
	}{{"sampler", &spec.Sampler.StageTemplate}, {"labeler", &spec.Labeler.StageTemplate},
		{"trainer", &spec.Trainer.StageTemplate}, {"evaluator", &spec.Evaluator.StageTemplate}}
	for _, st := range stages {
		path := field.NewPath("spec", st.name)
		if img := st.tmpl.Image; img != "" && repository(img) != own && !p.imageAllowed(img) {
			errs = append(errs, field.Forbidden(path.Child("image"),
				fmt.Sprintf("image %q is not the operator's stage image (%s) and matches no allowed prefix; an admin can allow it with the manager flag --allowed-stage-images (chart: stagePolicy.allowedImages)", img, own)))
		}
		if (len(st.tmpl.Command) > 0 || len(st.tmpl.Args) > 0) && !p.AllowCommand {
			errs = append(errs, field.Forbidden(path.Child("command"),
				"command and args overrides are not allowed; an admin can allow them with --allow-stage-command (chart: stagePolicy.allowCommand)"))
		}
		for i, e := range st.tmpl.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && !p.AllowSecretEnv {
				errs = append(errs, field.Forbidden(path.Child("env").Index(i),
					fmt.Sprintf("env %s reads Secret %s, which this policy does not allow (use spec.labeler.annotator.secretRef for an annotator token); an admin can allow it with --allow-stage-secret-env (chart: stagePolicy.allowSecretEnv)", e.Name, e.ValueFrom.SecretKeyRef.Name)))
			}
		}
	}
	return errs
}

func (p StagePolicy) imageAllowed(img string) bool {
	for _, pre := range p.AllowedImages {
		if pre == "*" || (pre != "" && strings.HasPrefix(img, pre)) {
			return true
		}
	}
	return false
}
