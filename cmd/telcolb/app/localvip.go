package app

import (
	"log/slog"
	"net/netip"
	"path/filepath"

	"github.com/telcolb/telcolb/api"
	"github.com/telcolb/telcolb/ha/localvip"
)

// LocalVIPConfig configures local VIPs: the VIPs of services the daemon
// terminates itself (N2 and PFCP proxies listen on them) become local
// addresses of the node on a dummy interface while the service exists.
type LocalVIPConfig struct {
	// Interface is the dummy interface (localvip.DefaultInterface if empty).
	Interface string
}

// LocalVIPConfigOf returns the configuration the options ask for, nil when
// local VIPs are disabled (empty --local-vip-interface).
func LocalVIPConfigOf(o Options) *LocalVIPConfig {
	if o.LocalVIPInterface == "" {
		return nil
	}
	return &LocalVIPConfig{Interface: o.LocalVIPInterface}
}

// localVIPsFile records, in the state directory, the addresses the daemon
// added, so a restart keeps them and never removes anybody else's.
const localVIPsFile = "localvips.json"

// localVIPs is the server's use of localvip.Manager; a nil manager (local
// VIPs disabled) makes every method a no-op.
type localVIPs struct {
	m   *localvip.Manager
	log *slog.Logger
}

func newLocalVIPs(cfg *LocalVIPConfig, stateDir string, log *slog.Logger) (*localVIPs, error) {
	l := &localVIPs{log: log}
	if cfg == nil {
		return l, nil
	}
	if stateDir == "" {
		stateDir = DefaultStateDir
	}
	m, err := localvip.New(localvip.Config{Interface: cfg.Interface, StateFile: filepath.Join(stateDir, localVIPsFile), Logger: log})
	if err != nil {
		return nil, err
	}
	l.m = m
	return l, nil
}

// hold makes the service's VIPs local before its proxy listens on them. A
// failure is the API's: the proxy could not listen anyway.
func (l *localVIPs) hold(svc api.Service) error {
	if l.m == nil {
		return nil
	}
	if err := l.m.Hold(svc.Name, serviceVIPs(svc)); err != nil {
		return &api.FieldError{Field: "vip", Message: "cannot make the VIP a local address of the node: " + err.Error()}
	}
	return nil
}

// served passes on the result of starting a proxy; when it failed, the
// service does not serve its VIPs: they are released.
func (l *localVIPs) served(svc api.Service, err error) error {
	if err != nil {
		l.release(svc.Name)
	}
	return err
}

// release drops the service's hold; VIPs no service holds stop being local.
func (l *localVIPs) release(name string) {
	if l.m == nil {
		return
	}
	if err := l.m.Hold(name, nil); err != nil {
		l.log.Error("local VIP removal failed; the address stays until the next change or restart", "service", name, "err", err)
	}
}

// reconcile removes the local VIPs of services gone while the daemon was down.
func (l *localVIPs) reconcile() {
	if l.m == nil {
		return
	}
	if err := l.m.Reconcile(); err != nil {
		l.log.Error("local VIP reconcile", "err", err)
	}
}

// local reports whether vip is a local VIP now (for GET /v1/vips).
func (l *localVIPs) local(vip netip.Addr) bool { return l.m != nil && l.m.Local(vip) }
