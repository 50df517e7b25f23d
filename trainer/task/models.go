package task

import (
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strings"
)

// modelFS holds the built-in models (see models/README.md).
//
//go:embed all:models
var modelFS embed.FS

// ModelNames lists the built-in models, sorted.
func ModelNames() []string {
	entries, _ := fs.ReadDir(modelFS, "models")
	var names []string
	for _, e := range entries {
		if e.IsDir() {
			if _, err := fs.Stat(modelFS, "models/"+e.Name()+"/config.json"); err == nil {
				names = append(names, e.Name())
			}
		}
	}
	sort.Strings(names)
	return names
}

// BuiltinModel returns the files of a built-in model.
func BuiltinModel(name string) (fs.FS, error) {
	for _, n := range ModelNames() {
		if n == name {
			return fs.Sub(modelFS, "models/"+name)
		}
	}
	avail := strings.Join(ModelNames(), ", ")
	if avail == "" {
		avail = "none in this build"
	}
	return nil, fmt.Errorf("unknown built-in model %q (available: %s)", name, avail)
}
