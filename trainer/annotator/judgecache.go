package annotator

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/bpo-dev/bpo/internal/fsutil"
)

// verdictCache keeps a judge's verdicts in a folder, one small file per verdict (one order of
// one pair), written atomically (a temporary file renamed into place): a retried or resumed
// stage asks only for what it lacks, and a killed process loses at most the verdicts in flight.
// A file that cannot be read (say, cut short by another writer) is a miss and is written anew.
type verdictCache struct{ dir string }

// cacheVersion changes when the meaning of a cached verdict does.
const cacheVersion = "bpo-judge-verdict-v1"

// key hashes the judge's identity and one order of one pair. Fields are length-prefixed, so
// that no two different inputs share a key by moving text from one field to the next.
func (c *verdictCache) key(identity, prompt, a, b string) string {
	h := sha256.New()
	for _, part := range []string{cacheVersion, identity, prompt, a, b} {
		_ = binary.Write(h, binary.LittleEndian, uint64(len(part)))
		h.Write([]byte(part))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// path spreads the files over 256 folders.
func (c *verdictCache) path(key string) string { return filepath.Join(c.dir, key[:2], key+".json") }

type cachedVerdict struct {
	Verdict string `json:"verdict"`
}

func (c *verdictCache) get(key string) (verdict, bool) {
	data, err := os.ReadFile(c.path(key))
	if err != nil {
		return 0, false
	}
	var cv cachedVerdict
	if json.Unmarshal(data, &cv) != nil {
		return 0, false
	}
	for v := verdictInvalid; v <= verdictTie; v++ {
		if v.String() == cv.Verdict {
			return v, true
		}
	}
	return 0, false
}

func (c *verdictCache) put(key string, v verdict) error {
	p := c.path(key)
	data, _ := json.Marshal(cachedVerdict{v.String()})
	if err := fsutil.WriteFile(p, append(data, '\n')); err != nil {
		return fmt.Errorf("verdict cache: %w", err)
	}
	return nil
}
