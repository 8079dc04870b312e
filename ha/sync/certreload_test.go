package sync

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"os"
	stdsync "sync"
	"testing"
	"time"
)

// connLog is a node's log handler keeping its "sync peer connected" lines:
// the certificate serial each peer presented, connection after connection.
type connLog struct {
	mu      stdsync.Mutex
	serials map[string][]string
}

func (l *connLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *connLog) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *connLog) WithGroup(string) slog.Handler            { return l }
func (l *connLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "sync peer connected" {
		return nil
	}
	var peer, serial string
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "peer":
			peer = a.Value.String()
		case "certSerial":
			serial = a.Value.String()
		}
		return true
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.serials == nil {
		l.serials = map[string][]string{}
	}
	l.serials[peer] = append(l.serials[peer], serial)
	return nil
}

// connected is the serials peer presented to this node, oldest first.
func (l *connLog) connected(peer string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.serials[peer]...)
}

// loggedGroup starts nodes a and b of ca with their connection logs.
func loggedGroup(t *testing.T, ca *testCA) (*group, map[string]*connLog) {
	logs := map[string]*connLog{"a": {}, "b": {}}
	g := &group{t: t, ca: ca, names: []string{"a", "b"}, addrs: map[string]string{}, nodes: map[string]*tnode{},
		logger: func(name string) *slog.Logger { return slog.New(logs[name]) }}
	g.start("b", "127.0.0.1:0")
	g.start("a", "127.0.0.1:0")
	return g, logs
}

// replaceFile writes b over path as a Secret volume update does (a new
// file renamed over the old one).
func replaceFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path+".new", b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// renew writes the certificate and key in certFile/keyFile over tn's.
func (tn *tnode) renew(t *testing.T, certFile, keyFile string) {
	t.Helper()
	replaceFile(t, tn.keyFile, readFile(t, keyFile))
	replaceFile(t, tn.certFile, readFile(t, certFile))
}

func leafOf(t *testing.T, certFile, keyFile string) *x509.Certificate {
	t.Helper()
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return c.Leaf
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 30 s: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// serverSerial handshakes with n as member b (certFile/keyFile) and
// returns the serial of the certificate n presents.
func serverSerial(t *testing.T, n *Node, roots *x509.CertPool, certFile, keyFile string) string {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", n.Addr().String(),
		&tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, RootCAs: roots, ServerName: "a"})
	if err != nil {
		t.Fatalf("handshake with a: %v", err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// A renewed certificate and key written over a node's files are used by
// the next handshakes, both as client and as server, while the
// connection made before the renewal keeps carrying records.
func TestRenewedCertificateUsedWithoutRestart(t *testing.T) {
	g, logs := loggedGroup(t, newCA(t, "group"))
	a, b := g.nodes["a"], g.nodes["b"]
	g.put("a", "before-a", "1")
	g.put("b", "before-b", "1")
	g.converged(time.Minute)
	oldA, oldB := leafOf(t, a.certFile, a.keyFile), leafOf(t, b.certFile, b.keyFile)
	if got := logs["b"].connected("a"); len(got) != 1 || got[0] != oldA.SerialNumber.String() {
		t.Fatalf("b saw a connect with serials %v, want [%s]", got, oldA.SerialNumber)
	}

	now := time.Now()
	ca, ka := g.ca.issue(t, "a", now.Add(-time.Hour), now.Add(48*time.Hour))
	cb, kb := g.ca.issue(t, "b", now.Add(-time.Hour), now.Add(48*time.Hour))
	a.renew(t, ca, ka)
	b.renew(t, cb, kb)
	newA, newB := leafOf(t, ca, ka), leafOf(t, cb, kb)
	ups := a.n.Stats().PeerUps + b.n.Stats().PeerUps
	g.put("a", "after-a", "2")
	g.put("b", "after-b", "2")
	g.converged(time.Minute)
	if got := a.n.Stats().PeerUps + b.n.Stats().PeerUps; got != ups || len(logs["b"].connected("a")) != 1 {
		t.Fatalf("the renewal reconnected the peers (%d peer ups, was %d; b's log %v)", got, ups, logs["b"].connected("a"))
	}
	st := a.n.Stats()
	if !st.CertNotAfter.Equal(newA.NotAfter) || st.TLSReloads != 1 || st.TLSReloadErrors != 0 {
		t.Errorf("a's stats: notAfter %v (want the renewed %v, was %v), %d reloads, %d errors", st.CertNotAfter, newA.NotAfter, oldA.NotAfter, st.TLSReloads, st.TLSReloadErrors)
	}

	a.n.dropConnection("b")
	waitUntil(t, "a reconnected to b", func() bool { return len(logs["b"].connected("a")) == 2 && len(logs["a"].connected("b")) == 2 })
	if got := logs["b"].connected("a")[1]; got != newA.SerialNumber.String() {
		t.Errorf("a presented serial %s as client after the renewal, want the renewed %s (old %s)", got, newA.SerialNumber, oldA.SerialNumber)
	}
	if got := logs["a"].connected("b")[1]; got != newB.SerialNumber.String() {
		t.Errorf("b presented serial %s as server after the renewal, want the renewed %s (old %s)", got, newB.SerialNumber, oldB.SerialNumber)
	}
	g.put("a", "reconnected-a", "3")
	g.converged(time.Minute)
}

// A CA rotation: the bundle first holds the old and the new CA, members
// move to new-CA certificates one by one, then the old CA is removed and
// a member still presenting an old-CA certificate is refused.
func TestCARotation(t *testing.T) {
	old, next := newCA(t, "old"), newCA(t, "next")
	g, logs := loggedGroup(t, old)
	a, b := g.nodes["a"], g.nodes["b"]
	g.put("a", "k-a", "1")
	g.converged(time.Minute)

	replaceFile(t, g.ca.file, append(readFile(t, old.file), readFile(t, next.file)...))
	cb, kb := next.valid(t, "b")
	b.renew(t, cb, kb)
	a.n.dropConnection("b")
	// a (dialling) verifies b's new-CA certificate against the bundle; b
	// verifies a's old-CA one.
	waitUntil(t, "a reconnected to b presenting its new-CA certificate", func() bool {
		got := logs["a"].connected("b")
		return len(got) == 2 && got[1] == leafOf(t, cb, kb).SerialNumber.String()
	})
	g.put("a", "k-a", "2")
	g.converged(time.Minute)

	replaceFile(t, g.ca.file, readFile(t, next.file))
	refused := b.n.Stats().Refused
	a.n.dropConnection("b")
	waitUntil(t, "b refused a's old-CA certificate", func() bool { return b.n.Stats().Refused > refused })
	if b.n.Up("a") || len(logs["b"].connected("a")) != 2 {
		t.Fatalf("a got in with an old-CA certificate after the old CA was removed (b's log %v)", logs["b"].connected("a"))
	}

	ca, ka := next.valid(t, "a")
	a.renew(t, ca, ka)
	waitUntil(t, "a reconnected with its new-CA certificate", func() bool {
		got := logs["b"].connected("a")
		return len(got) == 3 && got[2] == leafOf(t, ca, ka).SerialNumber.String()
	})
	g.put("a", "k-a", "3")
	g.converged(time.Minute)
	if e := a.n.Stats().TLSReloadErrors + b.n.Stats().TLSReloadErrors; e != 0 {
		t.Errorf("%d reload errors in a clean rotation", e)
	}
}

// A renewal that does not load (a key of another certificate, a truncated
// certificate, a truncated CA bundle) keeps the previous set in use, is
// counted once each, and a later good write is picked up.
func TestBrokenRenewalKeepsPreviousFiles(t *testing.T) {
	log := &connLog{}
	g := &group{t: t, ca: newCA(t, "group"), names: []string{"a", "b", "c"}, addrs: map[string]string{"b": "127.0.0.1:1", "c": "127.0.0.1:1"},
		nodes: map[string]*tnode{}, logger: func(string) *slog.Logger { return slog.New(log) }}
	a := g.start("a", "127.0.0.1:0")
	roots := x509.NewCertPool()
	roots.AddCert(g.ca.cert)
	cb, kb := g.ca.valid(t, "b")
	first := leafOf(t, a.certFile, a.keyFile)
	if got := serverSerial(t, a.n, roots, cb, kb); got != first.SerialNumber.String() {
		t.Fatalf("a presents %s, want %s", got, first.SerialNumber)
	}
	caPEM := readFile(t, g.ca.file)
	now := time.Now()
	nc, nk := g.ca.issue(t, "a", now.Add(-time.Hour), now.Add(72*time.Hour))
	_, otherKey := g.ca.valid(t, "a")
	steps := []struct {
		name  string
		write func()
		want  *x509.Certificate
		errs  uint64
	}{
		{"key of another certificate", func() {
			replaceFile(t, a.keyFile, readFile(t, otherKey))
			replaceFile(t, a.certFile, readFile(t, nc))
		}, first, 1},
		{"truncated certificate", func() {
			replaceFile(t, a.keyFile, readFile(t, nk))
			c := readFile(t, nc)
			replaceFile(t, a.certFile, c[:len(c)/2])
		}, first, 2},
		{"good pair, truncated CA bundle", func() {
			replaceFile(t, a.certFile, readFile(t, nc))
			other := readFile(t, newCA(t, "other").file)
			replaceFile(t, g.ca.file, append(append([]byte{}, caPEM...), other[:len(other)/2]...))
		}, first, 3},
		{"CA bundle written whole", func() { replaceFile(t, g.ca.file, caPEM) }, leafOf(t, nc, nk), 3},
	}
	for i, s := range steps {
		s.write()
		if got := serverSerial(t, a.n, roots, cb, kb); got != s.want.SerialNumber.String() {
			t.Errorf("%s: a presents serial %s, want %s", s.name, got, s.want.SerialNumber)
		}
		st := a.n.Stats()
		if st.TLSReloadErrors != s.errs || !st.CertNotAfter.Equal(s.want.NotAfter) {
			t.Errorf("%s: %d reload errors, notAfter %v; want %d, %v", s.name, st.TLSReloadErrors, st.CertNotAfter, s.errs, s.want.NotAfter)
		}
		// Member b got in: the CA pool in use is never emptied.
		waitUntil(t, s.name+": a accepted member b", func() bool { return len(log.connected("b")) == i+2 })
	}
	if r := a.n.Stats().Refused; r != 0 {
		t.Errorf("%d connections refused", r)
	}
	if st := a.n.Stats(); st.TLSReloads != 1 {
		t.Errorf("%d reloads, want 1", st.TLSReloads)
	}
}
