// Package certfile serves TLS material (a certificate and key, a CA
// bundle) read from files and reloads it when the files change, so a
// renewal written by cert-manager into a mounted Secret is used without a
// restart. The REST API's server certificate and the HA sync's mutual TLS
// share it.
//
// A change is seen when the material is asked for (a handshake, a metrics
// scrape): a stat per file, no watcher goroutine to stop. A file set that
// does not load (a renewal half written, a key of another certificate, a
// truncated bundle) is logged and counted once, the previous material
// keeps being served, and the files are read again at every later check
// until a set that loads appears.
package certfile

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"
)

// Reloader holds material of type T parsed from a set of files.
type Reloader[T any] struct {
	what  string // for logs: "API certificate", "HA sync TLS files"
	files []string
	parse func(contents [][]byte) (T, error)
	log   *slog.Logger

	mu  sync.Mutex
	cur T
	// stamps are the files' stamps when cur was read; sum digests their
	// contents. failedSum digests the last set that did not load (zero
	// when the files in place loaded).
	stamps    []stamp
	sum       [sha256.Size]byte
	failedSum [sha256.Size]byte
	failing   bool
	errors    uint64
	reloads   uint64
}

// stamp tells a file's versions apart: a Secret volume update replaces the
// file (new inode behind the ..data symlink), an in-place rewrite changes
// its size or mtime.
type stamp struct {
	ino, size int64
	mtime     time.Time
}

func statFile(path string) (stamp, error) {
	fi, err := os.Stat(path) // follows the Secret volume's ..data symlink
	if err != nil {
		return stamp{}, err
	}
	s := stamp{size: fi.Size(), mtime: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.ino = int64(st.Ino)
	}
	return s, nil
}

// New reads and parses the files once. Material that does not load is an
// error here: a daemon refuses to start rather than run without it.
// parse gets the files' contents in the order of files.
func New[T any](what string, files []string, parse func(contents [][]byte) (T, error), log *slog.Logger) (*Reloader[T], error) {
	if log == nil {
		log = slog.Default()
	}
	r := &Reloader[T]{what: what, files: files, parse: parse, log: log}
	stamps, contents, sum, err := r.read()
	if err != nil {
		return nil, err
	}
	cur, err := parse(contents)
	if err != nil {
		return nil, err
	}
	r.cur, r.stamps, r.sum = cur, stamps, sum
	return r, nil
}

// read stats then reads every file. The stamps are taken first: a file
// replaced between the two is read again at the next check.
func (r *Reloader[T]) read() ([]stamp, [][]byte, [sha256.Size]byte, error) {
	stamps := make([]stamp, len(r.files))
	contents := make([][]byte, len(r.files))
	h := sha256.New()
	var err error
	for i, f := range r.files {
		if stamps[i], err = statFile(f); err != nil {
			return nil, nil, [sha256.Size]byte{}, fmt.Errorf("%s: %w", r.what, err)
		}
		if contents[i], err = os.ReadFile(f); err != nil {
			return nil, nil, [sha256.Size]byte{}, fmt.Errorf("%s: %w", r.what, err)
		}
		fmt.Fprintf(h, "%d:", len(contents[i]))
		h.Write(contents[i])
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return stamps, contents, sum, nil
}

func (r *Reloader[T]) unchanged() bool {
	for i, f := range r.files {
		s, err := statFile(f)
		if err != nil || s != r.stamps[i] {
			return false
		}
	}
	return true
}

// Current is the material, reloaded first when a file changed.
func (r *Reloader[T]) Current() T {
	r.mu.Lock()
	defer r.mu.Unlock()
	// While failing, the stamps differ from those of the set in use:
	// the files are read at every check until a set loads.
	if r.unchanged() {
		return r.cur
	}
	stamps, contents, sum, err := r.read()
	var errSum [sha256.Size]byte
	if err != nil {
		errSum = sha256.Sum256([]byte(err.Error()))
		r.fail(errSum, err)
		return r.cur
	}
	if sum == r.sum {
		// Rewritten with the same contents, or back to what is served
		// after a broken write.
		r.stamps, r.failing = stamps, false
		return r.cur
	}
	if r.failing && sum == r.failedSum {
		return r.cur // still the set that did not load: said already
	}
	cur, err := r.parse(contents)
	if err != nil {
		r.fail(sum, err)
		return r.cur
	}
	r.cur, r.stamps, r.sum, r.failing = cur, stamps, sum, false
	r.reloads++
	r.log.Info(r.what+" reloaded", "files", r.files)
	return r.cur
}

// fail records a set that did not load, logging and counting it once.
func (r *Reloader[T]) fail(sum [sha256.Size]byte, err error) {
	if r.failing && sum == r.failedSum {
		return
	}
	r.failing, r.failedSum = true, sum
	r.errors++
	r.log.Warn(r.what+" changed but does not load; keeping the previous one", "files", r.files, "error", err)
}

// Stats are the reloader's counters.
type Stats struct {
	// Reloads counts file sets loaded after the first.
	Reloads uint64
	// Errors counts distinct file sets that did not load (each logged
	// once, however many checks see it).
	Errors uint64
}

// Stats returns the counters (without checking the files).
func (r *Reloader[T]) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Stats{Reloads: r.reloads, Errors: r.errors}
}

// KeyPair parses a certificate (chain) and its key, with Leaf set.
// certFile and keyFile name them in errors.
func KeyPair(certFile, keyFile string, certPEM, keyPEM []byte) (*tls.Certificate, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("certificate %s / key %s: %w", certFile, keyFile, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("certificate %s: %w", certFile, err)
		}
	}
	return &cert, nil
}

// CAPool parses a bundle of PEM CA certificates. Unlike
// x509.CertPool.AppendCertsFromPEM it refuses a bundle with anything but
// whole certificates: a truncated bundle (the new CA of a rotation cut in
// half) would otherwise load as the old CA alone.
func CAPool(file string, b []byte) (*x509.CertPool, []*x509.Certificate, error) {
	pool := x509.NewCertPool()
	var certs []*x509.Certificate
	rest := b
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, nil, fmt.Errorf("CA file %s: PEM block %d is a %q, not a CERTIFICATE", file, len(certs)+1, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, nil, fmt.Errorf("CA file %s: certificate %d: %w", file, len(certs)+1, err)
		}
		pool.AddCert(c)
		certs = append(certs, c)
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, nil, fmt.Errorf("CA file %s: %d bytes after certificate %d are not a whole PEM certificate (truncated?)", file, len(bytes.TrimSpace(rest)), len(certs))
	}
	if len(certs) == 0 {
		return nil, nil, fmt.Errorf("CA file %s holds no PEM certificate", file)
	}
	return pool, certs, nil
}

// ServerCert serves a certificate and key from files as
// tls.Config.GetCertificate.
type ServerCert struct {
	*Reloader[*tls.Certificate]
}

// NewServerCert loads the pair; what names it in logs.
func NewServerCert(what, certFile, keyFile string, log *slog.Logger) (*ServerCert, error) {
	r, err := New(what, []string{certFile, keyFile}, func(c [][]byte) (*tls.Certificate, error) {
		return KeyPair(certFile, keyFile, c[0], c[1])
	}, log)
	if err != nil {
		return nil, err
	}
	return &ServerCert{r}, nil
}

// GetCertificate is tls.Config.GetCertificate: the current pair.
func (s *ServerCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.Current(), nil
}
