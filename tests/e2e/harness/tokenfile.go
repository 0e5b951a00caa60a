package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// TokenDir is a projected service account token volume laid out the way the kubelet's
// AtomicWriter does it:
//
//	dir/..2026_12_03_19_34_37.123456789/token
//	dir/..data -> ..2026_12_03_19_34_37.123456789
//	dir/token  -> ..data/token
//
// Rotation writes a new timestamped dir and swaps ..data with a rename, so a reader of
// dir/token sees the old or the new token, never a mix.
type TokenDir struct {
	Dir string
	mu  sync.Mutex
	cur string // current timestamped dir name
	seq int
}

// NewTokenDir makes the layout under dir (created) holding token.
func NewTokenDir(dir, token string) (*TokenDir, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	td := &TokenDir{Dir: dir}
	if err := td.Rotate(token); err != nil {
		return nil, err
	}
	if err := os.Symlink(filepath.Join("..data", "token"), filepath.Join(dir, "token")); err != nil {
		return nil, err
	}
	return td, nil
}

// Path is the token file the daemon reads (dir/token).
func (td *TokenDir) Path() string { return filepath.Join(td.Dir, "token") }

// Rotate atomically replaces the token by the kubelet's ..data swap and removes the old
// timestamped dir.
func (td *TokenDir) Rotate(token string) error {
	td.mu.Lock()
	defer td.mu.Unlock()
	td.seq++
	name := fmt.Sprintf("..%s.%09d", time.Now().UTC().Format("2006_01_02_15_04_05"), td.seq)
	tsDir := filepath.Join(td.Dir, name)
	if err := os.Mkdir(tsDir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tsDir, "token"), []byte(token), 0o644); err != nil {
		return err
	}
	tmpLink := filepath.Join(td.Dir, "..data_tmp")
	_ = os.Remove(tmpLink)
	if err := os.Symlink(name, tmpLink); err != nil {
		return err
	}
	if err := os.Rename(tmpLink, filepath.Join(td.Dir, "..data")); err != nil {
		return err
	}
	if td.cur != "" {
		if err := os.RemoveAll(filepath.Join(td.Dir, td.cur)); err != nil {
			return err
		}
	}
	td.cur = name
	return nil
}
