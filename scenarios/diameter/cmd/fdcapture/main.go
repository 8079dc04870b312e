// Command fdcapture records messages produced by a real freeDiameterd, as
// seed input for l7parse/diameter's tests and fuzz target (messages we did
// not write). Run it as root inside a fresh network namespace, since
// freeDiameterd listens on every address:
//
//	unshare -n sh -c 'ip link set lo up; ip link add d0 type veth peer name d1;
//	  ip addr add 10.99.0.1/24 dev d0; ip link set d0 up; ip link set d1 up;
//	  go run ./scenarios/diameter/cmd/fdcapture -out l7parse/diameter/testdata/captured'
//
// (freeDiameterd leaves loopback addresses out of its CER, and refuses to
// start with no other address.)
//
// It starts freeDiameterd (identity fd.localdomain) with a peer it connects
// to (cap.localdomain, served here on port 3869), connects to it as
// client.localdomain, and keeps what freeDiameterd sends on both
// connections: its CER and CEA, a relayed CCR (with its Route-Record), the
// relayed CCA, an error answer, DWR, DWA and DPA.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/telcolb/telcolb/l7parse/diameter"
)

func main() {
	out := flag.String("out", "testdata/captured", "directory for the captured messages")
	bin := flag.String("freediameterd", "freeDiameterd", "freeDiameterd binary")
	addr := flag.String("addr", "10.99.0.1", "a local, non-loopback address for freeDiameterd and the capture peers")
	flag.Parse()
	if err := run(*out, *bin, *addr); err != nil {
		log.Fatal(err)
	}
}

// WriteCert writes a self-signed certificate and key (freeDiameterd insists
// on TLS credentials even when every peer uses plain TCP).
func WriteCert(dir, cn string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, DNSNames: []string{cn}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "cert.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
}

func run(out, bin, addr string) error {
	dir, err := os.MkdirTemp("", "fdcapture")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := WriteCert(dir, "fd.localdomain"); err != nil {
		return err
	}
	conf := fmt.Sprintf(`Identity = "fd.localdomain";
Realm = "localdomain";
ListenOn = "%[2]s";
Port = 3868;
SecPort = 0;
No_SCTP;
No_IPv6;
TwTimer = 6;
TLS_Cred = "%[1]s/cert.pem", "%[1]s/key.pem";
TLS_CA = "%[1]s/cert.pem";
LoadExtension = "dict_nasreq.fdx";
LoadExtension = "dict_dcca.fdx";
LoadExtension = "acl_wl.fdx" : "%[1]s/acl.conf";
ConnectPeer = "cap.localdomain" { ConnectTo = "%[2]s"; Port = 3869; No_TLS; };
`, dir, addr)
	if err := os.WriteFile(filepath.Join(dir, "fd.conf"), []byte(conf), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "acl.conf"), []byte("ALLOW_IPSEC *.localdomain\n"), 0o600); err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	save := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(out, "fd-"+name+".bin"), b, 0o644); err != nil {
			log.Fatal(err)
		}
		log.Printf("captured %s (%d bytes)", name, len(b))
	}

	ln, err := net.Listen("tcp", addr+":3869")
	if err != nil {
		return err
	}
	defer ln.Close()
	cmd := exec.Command(bin, "-c", filepath.Join(dir, "fd.conf"))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	capCaps := diameter.Capabilities{Identity: diameter.Identity{Host: "cap.localdomain", Realm: "localdomain"},
		HostIPs: []netip.Addr{netip.MustParseAddr(addr)}, ProductName: "fdcapture", AuthApps: []uint32{diameter.AppCC}}
	// Server side: freeDiameterd connects to cap.localdomain.
	srv := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			log.Print(err)
			return
		}
		b, err := read(c)
		if err != nil {
			log.Print(err)
			return
		}
		save("cer", b)
		h, _ := diameter.ParseHeader(b)
		_, _ = c.Write(diameter.CEA(h, capCaps, diameter.Success))
		srv <- c
	}()
	var server net.Conn
	select {
	case server = <-srv:
	case <-time.After(30 * time.Second):
		return fmt.Errorf("freeDiameterd did not connect to the capture peer")
	}

	var client net.Conn
	for i := 0; i < 50; i++ {
		if client, err = net.Dial("tcp", addr+":3868"); err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	cli := diameter.Capabilities{Identity: diameter.Identity{Host: "client.localdomain", Realm: "localdomain"},
		HostIPs: []netip.Addr{netip.MustParseAddr(addr)}, ProductName: "fdcapture", AuthApps: []uint32{diameter.AppCC}}
	if _, err := client.Write(diameter.CER(cli, 1, 1)); err != nil {
		return err
	}
	b, err := read(client)
	if err != nil {
		return err
	}
	save("cea", b)

	ccr := func(hbh uint32, destHost string) []byte {
		avps := [][]byte{diameter.Str(diameter.AVPSessionID, fmt.Sprintf("client.localdomain;1;%d", hbh)),
			diameter.Str(diameter.AVPOriginHost, cli.Host), diameter.Str(diameter.AVPOriginRealm, cli.Realm),
			diameter.Str(diameter.AVPDestinationRealm, "localdomain"), diameter.U32(diameter.AVPAuthAppID, diameter.AppCC),
			diameter.Str(diameter.AVPServiceContextID, "32251@3gpp.org"), diameter.U32(diameter.AVPCCRequestType, diameter.CCInitial),
			diameter.U32(diameter.AVPCCRequestNumber, 0),
			diameter.EncodeAVP(4242, diameter.AVPMandatory, 99999, []byte("opaque-vendor-avp"))}
		if destHost != "" {
			avps = append(avps, diameter.Str(diameter.AVPDestinationHost, destHost))
		}
		return diameter.Message(diameter.FlagRequest|diameter.FlagProxiable, diameter.CmdCreditControl, diameter.AppCC, hbh, hbh, avps...)
	}
	// A CCR freeDiameterd relays to cap.localdomain.
	if _, err := client.Write(ccr(10, "cap.localdomain")); err != nil {
		return err
	}
	b, err = read(server)
	if err != nil {
		return err
	}
	save("ccr-relayed", b)
	m, err := diameter.Parse(b)
	if err != nil {
		return fmt.Errorf("relayed CCR: %w", err)
	}
	_, _ = server.Write(diameter.Answer(m.Header, m.SessionID, capCaps.Identity, diameter.Success,
		diameter.U32(diameter.AVPCCRequestType, diameter.CCInitial), diameter.U32(diameter.AVPCCRequestNumber, 0)))
	if b, err = readSkippingDWR(client, cli.Identity); err != nil {
		return err
	}
	save("cca-relayed", b)
	// A CCR for a host nobody knows: freeDiameterd answers with an error
	// (3002). Its watchdog (Tw 6s) may come first: answer and keep it.
	if _, err := client.Write(ccr(11, "nobody.elsewhere")); err != nil {
		return err
	}
	sawDWR, sawErr := false, false
	for !sawDWR || !sawErr {
		m, err := read(client)
		if err != nil {
			return err
		}
		h, _ := diameter.ParseHeader(m)
		switch {
		case h.Code == diameter.CmdDeviceWatchdog && h.IsRequest():
			if !sawDWR {
				save("dwr", m)
			}
			sawDWR = true
			_, _ = client.Write(diameter.Answer(h, nil, cli.Identity, diameter.Success))
		case h.Code == diameter.CmdCreditControl && !h.IsRequest():
			save("error-answer", m)
			sawErr = true
		}
	}
	_, _ = client.Write(diameter.DWR(cli.Identity, 0, 20, 20))
	if b, err = readSkippingDWR(client, cli.Identity); err != nil {
		return err
	}
	save("dwa", b)
	_, _ = client.Write(diameter.DPR(cli.Identity, diameter.DisconnectDoNotWantToTalk, 21, 21))
	if b, err = readSkippingDWR(client, cli.Identity); err != nil {
		return err
	}
	save("dpa", b)
	return nil
}

func read(c net.Conn) ([]byte, error) {
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	h := make([]byte, 4)
	if _, err := io.ReadFull(c, h); err != nil {
		return nil, err
	}
	n, err := diameter.FrameLen(h)
	if err != nil {
		return nil, err
	}
	b := make([]byte, n)
	copy(b, h)
	_, err = io.ReadFull(c, b[4:])
	return b, err
}

// readSkippingDWR reads the next message that is not a DWR, answering DWRs.
func readSkippingDWR(c net.Conn, id diameter.Identity) ([]byte, error) {
	for {
		b, err := read(c)
		if err != nil {
			return nil, err
		}
		h, _ := diameter.ParseHeader(b)
		if h.Code != diameter.CmdDeviceWatchdog || !h.IsRequest() {
			return b, nil
		}
		_, _ = c.Write(diameter.Answer(h, nil, id, diameter.Success))
	}
}
