package storage

import (
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// createFile is Create for file:// stores. fileblob's IfNotExist checks and renames under a
// mutex of this process only, so two pods on one shared volume could both "win". A hard
// link fails with EEXIST when the name is taken, atomically on local file systems and NFS,
// and the content behind the name is complete from the first moment, since the temp file
// was written and synced before.
func (s *Store) createFile(key string, data []byte) error {
	path := filepath.Join(s.loc.dir, filepath.FromSlash(s.key(key)))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	// fileblob's temp name pattern: listings skip it, and so may a sweeper.
	tmp := path + "." + strconv.FormatInt(time.Now().UnixNano(), 16) + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Link(tmp, path); err != nil {
		if os.IsExist(err) {
			return os.ErrExist
		}
		return err
	}
	return nil
}
