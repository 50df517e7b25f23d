package experiment

import "github.com/bpo-dev/bpo/internal/fsutil"

// The experiment folder's files are written the way the stages write the workspace (a kill never
// leaves half a file), by the one copy in internal/fsutil.
var (
	writeFileAtomic = fsutil.WriteFile
	writeJSONAtomic = fsutil.WriteJSON
	readJSON        = fsutil.ReadJSON
)
