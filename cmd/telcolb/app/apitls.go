package app

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"
)

// TLS on the REST API. The API carries a bearer token that can create
// services and flush conntrack: off loopback it is served over TLS, and a
// plain-HTTP listener on another address is refused unless
// --api-allow-insecure-http says so explicitly (a lab on an isolated
// network). The certificate is re-read when its files change, so a
// rotation (cert-manager renewing the Secret the DaemonSet mounts) needs no
// restart.

// checkAPITLS checks the API's TLS settings against its address. Errors
// name the flag.
func (o *Options) checkAPITLS() error {
	if (o.APITLSCertFile == "") != (o.APITLSKeyFile == "") {
		return errors.New("api-tls-cert-file and api-tls-key-file go together: set both or neither")
	}
	if o.APITLSCertFile != "" || o.APIAllowInsecureHTTP {
		return nil
	}
	host, _, err := net.SplitHostPort(o.APIAddress)
	if err != nil {
		return fmt.Errorf("api-address %q: %w", o.APIAddress, err)
	}
	if !isLoopbackHost(host) {
		return fmt.Errorf("api-address %q is not a loopback address: serve the API over TLS (api-tls-cert-file, api-tls-key-file) or set api-allow-insecure-http to send the bearer token in clear text", o.APIAddress)
	}
	return nil
}

// isLoopbackHost: a literal loopback address or "localhost". An empty host
// (":8091") listens on every address, so it is not loopback.
func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// APITLSConfig is the server TLS configuration of the options, nil when
// the API is served in plain HTTP.
func (o *Options) APITLSConfig(log *slog.Logger) (*tls.Config, error) {
	if o.APITLSCertFile == "" {
		return nil, nil
	}
	r, err := NewCertReloader(o.APITLSCertFile, o.APITLSKeyFile, log)
	if err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.GetCertificate}, nil
}

// CertReloader serves a certificate and key pair from files and loads them
// again when either file changes. A change is seen at the next handshake
// (two stat calls per handshake, no watcher goroutine to stop). A pair that
// does not load (the key written before the certificate, a broken file) is
// logged and the previous pair keeps being served until a good one appears.
type CertReloader struct {
	certFile, keyFile string
	log               *slog.Logger

	mu    sync.Mutex
	cert  *tls.Certificate
	stamp [2]fileStamp
	// failed is the stamp of the last pair that did not load, logged once.
	failed [2]fileStamp
}

// fileStamp tells a file's versions apart: a Secret volume update replaces
// the file (new inode), an in-place rewrite changes size or mtime.
type fileStamp struct {
	ino, size int64
	mtime     time.Time
}

func statFile(path string) (fileStamp, error) {
	fi, err := os.Stat(path) // follows the Secret volume's ..data symlink
	if err != nil {
		return fileStamp{}, err
	}
	s := fileStamp{size: fi.Size(), mtime: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.ino = int64(st.Ino)
	}
	return s, nil
}

// NewCertReloader loads the pair once: a daemon whose certificate does not
// load refuses to start rather than serve without it.
func NewCertReloader(certFile, keyFile string, log *slog.Logger) (*CertReloader, error) {
	if log == nil {
		log = slog.Default()
	}
	r := &CertReloader{certFile: certFile, keyFile: keyFile, log: log}
	stamp, err := r.stamps()
	if err != nil {
		return nil, err
	}
	cert, err := r.load()
	if err != nil {
		return nil, err
	}
	r.cert, r.stamp = cert, stamp
	return r, nil
}

func (r *CertReloader) stamps() ([2]fileStamp, error) {
	var s [2]fileStamp
	var err error
	if s[0], err = statFile(r.certFile); err != nil {
		return s, fmt.Errorf("api-tls-cert-file: %w", err)
	}
	if s[1], err = statFile(r.keyFile); err != nil {
		return s, fmt.Errorf("api-tls-key-file: %w", err)
	}
	return s, nil
}

func (r *CertReloader) load() (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return nil, fmt.Errorf("api-tls-cert-file %s / api-tls-key-file %s: %w", r.certFile, r.keyFile, err)
	}
	if cert.Leaf == nil && len(cert.Certificate) > 0 {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("api-tls-cert-file %s: %w", r.certFile, err)
		}
	}
	return &cert, nil
}

// GetCertificate is tls.Config.GetCertificate: the current pair, reloaded
// first when a file changed.
func (r *CertReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	stamp, err := r.stamps()
	if err != nil {
		// A file briefly missing during an update: keep serving.
		return r.cert, nil
	}
	if stamp == r.stamp || stamp == r.failed {
		return r.cert, nil
	}
	cert, err := r.load()
	if err != nil {
		r.failed = stamp
		r.log.Warn("API certificate changed but does not load; serving the previous one", "error", err)
		return r.cert, nil
	}
	r.cert, r.stamp, r.failed = cert, stamp, [2]fileStamp{}
	r.log.Info("API certificate reloaded", "certFile", r.certFile, "notAfter", cert.Leaf.NotAfter)
	return r.cert, nil
}
