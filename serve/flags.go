package serve

import (
	"fmt"
	"strings"
)

// ParseLoRAModules reads --lora values NAME=PATH (vLLM's --lora-modules form) into a map; a value
// without "=", an empty side or a repeated name is an error naming the flag value.
func ParseLoRAModules(values []string) (map[string]string, error) {
	out := map[string]string{}
	for _, v := range values {
		name, path, ok := strings.Cut(v, "=")
		name, path = strings.TrimSpace(name), strings.TrimSpace(path)
		switch {
		case !ok || name == "" || path == "":
			return nil, fmt.Errorf("--lora %q: want NAME=PATH (PATH a PEFT adapter folder or a trainer adapter .safetensors file)", v)
		case out[name] != "":
			return nil, fmt.Errorf("--lora %q: the name %s is given twice", v, name)
		}
		out[name] = path
	}
	return out, nil
}
