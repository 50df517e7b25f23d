package experiment

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/bpo-dev/bpo/trainer/model"
)

// modelInfo describes the base models of the runs from their config.json (a built-in model is
// copied into each run's folder, roots[run name]).
func modelInfo(volume string, runs []RunRecord, roots map[string]string) []string {
	seen := map[string]bool{}
	var out []string
	for _, r := range runs {
		m := r.Spec.Model
		label, dir := "", ""
		if m.Path != "" {
			label, dir = "path "+m.Path, filepath.Join(volume, m.Path)
		} else {
			label, dir = "built-in "+m.Builtin, filepath.Join(roots[r.Name], "base")
		}
		if seen[label] {
			continue
		}
		seen[label] = true
		cfg, err := model.ReadConfig(filepath.Join(dir, "config.json"))
		if err != nil {
			out = append(out, fmt.Sprintf("%s (config.json unreadable: %v)", label, err))
			continue
		}
		total := 0
		for _, shape := range cfg.ParamShapes() {
			n := 1
			for _, d := range shape {
				n *= d
			}
			total += n
		}
		rank, lora := int(r.Spec.Ensemble.Rank), 0
		for _, t := range model.LoRATargets {
			if in, o, ok := cfg.TargetShape(t); ok {
				lora += rank * (in + o)
			}
		}
		lora *= cfg.NLayer
		out = append(out, fmt.Sprintf("%s: GPT-2 architecture, %d layers, width %d, %d heads, context %d, vocabulary %d: **%s parameters**; LoRA rank %d adds %s per ensemble member",
			label, cfg.NLayer, cfg.NEmbd, cfg.NHead, cfg.NPositions, cfg.VocabSize, groupDigits(total), rank, groupDigits(lora)))
	}
	return out
}

func groupDigits(n int) string {
	s := strconv.Itoa(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
