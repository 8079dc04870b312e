package app

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// The API is authenticated on every address, loopback included: any local
// user or host-network pod could otherwise create services or flush
// conntrack. The token lives in a file only its owner can read; telcolbctl
// on the node reads the same file (DefaultTokenFile), so no flag is needed.

// DefaultTokenFileName is the token file in the state dir when --token-file
// is not given.
const DefaultTokenFileName = "api-token"

// TokenFilePath is the token file the options name (telcolbctl's
// api.DefaultTokenFile with the default state dir).
func (o *Options) TokenFilePath() string {
	if o.TokenFile != "" {
		return o.TokenFile
	}
	return filepath.Join(o.StateDir, DefaultTokenFileName)
}

// ReadToken reads a bearer token file. The file must not be readable or
// writable by group or others: such a token is no secret.
func ReadToken(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("read token file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("read token file: %w", err)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("token file %s has mode %#o: group and others must have no access (chmod 600 %s)", path, perm, path)
	}
	raw := make([]byte, 4096)
	n, err := f.Read(raw)
	if err != nil && n == 0 {
		return "", fmt.Errorf("token file %s is empty", path)
	}
	tok := strings.TrimSpace(string(raw[:n]))
	if tok == "" {
		return "", fmt.Errorf("token file %s is empty", path)
	}
	if strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("token file %s: the token must be one word", path)
	}
	return tok, nil
}

// EnsureToken reads the token file, creating it (mode 0600, a random token)
// when it does not exist.
func EnsureToken(path string) (tok string, created bool, err error) {
	tok, err = ReadToken(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return tok, false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", false, fmt.Errorf("create token dir: %w", err)
	}
	tok = rand.Text()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		// Another process created it first: use theirs.
		tok, err = ReadToken(path)
		return tok, false, err
	}
	if err != nil {
		return "", false, fmt.Errorf("create token file: %w", err)
	}
	if _, err := f.WriteString(tok + "\n"); err != nil {
		f.Close()
		return "", false, fmt.Errorf("write token file: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return "", false, fmt.Errorf("sync token file: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", false, fmt.Errorf("close token file: %w", err)
	}
	return tok, true, nil
}
