package dataplane

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/telcolb/telcolb/bpf"
)

// MaxServices bounds service IDs (1..MaxServices-1); it sizes the per-service
// arrays of the datapath (bpf/include/lb_types.h LB_MAX_SERVICES).
const MaxServices = 16384

// MaxPortRange is the largest PortEnd-PortStart+1 a service may span: each
// port is one key in the services hash.
const MaxPortRange = 4096

const (
	selSlots        = 256
	defaultPinPath  = "/sys/fs/bpf/telcolb"
	defaultMaxConns = 256 * 1024
	defaultAgeEvery = 2 * time.Second
)

// Config configures Load.
type Config struct {
	// PinPath is the bpffs directory holding the pinned maps and tcx links.
	PinPath string
	// MaxConns sizes the IPv4 conntrack LRU (each connection uses two
	// entries), and the IPv6 one unless MaxConnsIPv6 is set.
	MaxConns int
	// MaxConnsIPv6 sizes the 40-byte-key conntrack LRU: IPv6 flows and
	// the IPv6 side of NAT64 flows. 0: MaxConns. Both maps are
	// preallocated, so a node carrying little IPv6 saves most of that
	// map's memory by setting it small.
	MaxConnsIPv6 int
	Logger       *slog.Logger
	// ForceClsact skips tcx and attaches through a clsact qdisc filter, the
	// path kernels older than 6.6 take.
	ForceClsact bool
	// AgeInterval is how often Run expires idle conntrack entries.
	AgeInterval time.Duration
	// DisableConntrackEvents leaves the conntrack change events for HA
	// peers (ConntrackChanges) out of the loaded program.
	DisableConntrackEvents bool
	// HelperL4Csum keeps bpf_l4_csum_replace for every TCP/UDP checksum of
	// the established fast path, also on kernels where it could write them
	// itself (l4csum.go): the variant 5.15 and 6.1 run, for comparison.
	HelperL4Csum bool
}

// Datapath owns the loaded eBPF objects. It is the only writer of the maps.
type Datapath struct {
	cfg  Config
	log  *slog.Logger
	objs bpf.LbObjects

	// maxServices is the size of the per-service arrays: IDs are
	// 1..maxServices-1.
	maxServices uint32

	// addrMu serialises the if_addrs writes of Attach, Detach and the
	// address watcher (ifaddr.go); taken before mu.
	addrMu sync.Mutex
	// netns is the network namespace Load ran in, where the attached
	// interfaces live; subscribe opens the address subscription.
	netns     netns.NsHandle
	subscribe addrSubscriber

	mu       sync.Mutex
	attached map[string]*attachment
	// snapHint sizes the next conntrack snapshot's map: the last one's
	// size. Growing a map of tens of thousands of entries from empty
	// rehashed it a dozen times, most of an ageing round's own time.
	snapHint atomic.Int64
	// sweepSnap is the sweeps' snapshot map (under mu: sweepSnapshot),
	// refilled by each; sweepPeak is the most entries it held since it
	// was made.
	sweepSnap map[bpf.LbCtKey]bpf.LbCtVal
	sweepPeak int
	// pending are old maps kept open until CompleteMigration; migrations
	// reports what Load migrated.
	pending    []*oldPin
	migrations []MapMigration
	// splitPending: conntrack held IPv4 entries of the one-map layout at
	// load, copied into conntrack4; CompleteMigration finishes the move
	// (ctsplit.go).
	splitPending bool
	// keysByID and vipRefs index the services map so programming one
	// service costs its own keys, not a scan of every service's.
	keysByID map[uint32][]bpf.LbSvcKey
	vipRefs  map[bpf.LbAddr16]int
	// slots are the endpoint counter slots of each service's endpoints,
	// handed out from pool (slots.go).
	slots map[uint32][]uint16
	pool  *slotPool
	// daemonFilter is what this process last read or wrote of the address
	// filter's daemon bitmap, of which it is the only writer (filter.go).
	daemonFilter *bpf.LbFilterBits
	// now returns CLOCK_MONOTONIC ns, the base of the datapath's lb_now().
	now func() uint64
	// clock is lb_now()'s calibration (clock.go); zero: the coarse helper.
	clock clockParams
	// codec encodes conntrack records for HA peers (ctrecord.go); readers
	// are the open change readers, which get the daemon's own deletions
	// (ctsync.go).
	codec     *recordCodec
	readersMu sync.Mutex
	readers   map[*ChangeReader]struct{}
	// sock is the socket-level load balancing this process attached
	// (socklb.go), nil when off.
	sock *sockLB
	// directL4Csum: the fast path writes TCP/UDP checksums without the
	// helpers (l4csum.go).
	directL4Csum bool
}

// Load loads the datapath objects, reusing compatible pinned maps so that
// services and connections survive a restart.
func Load(cfg Config) (*Datapath, error) {
	if cfg.PinPath == "" {
		cfg.PinPath = defaultPinPath
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = defaultMaxConns
	}
	if cfg.MaxConnsIPv6 <= 0 {
		cfg.MaxConnsIPv6 = cfg.MaxConns
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.AgeInterval <= 0 {
		cfg.AgeInterval = defaultAgeEvery
	}
	spec, err := bpf.LoadLb()
	if err != nil {
		return nil, fmt.Errorf("load datapath spec: %w", err)
	}
	spec.Maps[bpf.LbMapConntrack].MaxEntries = uint32(cfg.MaxConnsIPv6)
	spec.Maps[bpf.LbMapConntrack4].MaxEntries = uint32(cfg.MaxConns)
	if cfg.DisableConntrackEvents {
		v, ok := spec.Variables[bpf.LbVarCtEventsEnabled]
		if !ok {
			return nil, errors.New("datapath object has no ct_events_enabled")
		}
		if err := v.Set(uint32(0)); err != nil {
			return nil, fmt.Errorf("disable conntrack events: %w", err)
		}
	}

	direct, err := setDirectL4Csum(spec, cfg, cfg.Logger)
	if err != nil {
		return nil, err
	}

	if err := os.MkdirAll(filepath.Join(cfg.PinPath, "links"), 0o755); err != nil {
		return nil, fmt.Errorf("create pin path %s: %w", cfg.PinPath, err)
	}
	clock, err := setupClock(spec, cfg.PinPath, cfg.Logger)
	if err != nil {
		return nil, err
	}
	// Maps the new program cannot reuse as they are (upgrade, --max-conns)
	// are taken aside and their entries migrated, never dropped.
	olds, err := takeIncompatiblePins(spec, cfg.PinPath, cfg.Logger)
	if err != nil {
		restorePins(olds, cfg.Logger)
		return nil, err
	}

	codec, err := newRecordCodec(spec)
	if err != nil {
		restorePins(olds, cfg.Logger)
		return nil, err
	}
	ns, err := currentNetns()
	if err != nil {
		restorePins(olds, cfg.Logger)
		return nil, err
	}
	d := &Datapath{cfg: cfg, log: cfg.Logger, attached: map[string]*attachment{}, now: monotonicNow,
		maxServices: spec.Maps[bpf.LbMapSvcInfos].MaxEntries, codec: codec, readers: map[*ChangeReader]struct{}{},
		netns: ns, subscribe: netlink.AddrSubscribeWithOptions, directL4Csum: direct, clock: clock}
	// The verifier's statistics (instructions, stack depth per subprogram)
	// are logged at load: how close the program is to an older kernel's
	// limits shows on the kernel that loaded it.
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: cfg.PinPath}, Programs: ebpf.ProgramOptions{LogLevel: ebpf.LogLevelStats}}
	fail := func(err error) (*Datapath, error) {
		d.netns.Close()
		// Leave the pin path as it was: new pins out, old ones back.
		for _, op := range olds {
			_ = os.Remove(op.path)
		}
		restorePins(olds, cfg.Logger)
		return nil, err
	}
	if err := spec.LoadAndAssign(&d.objs, opts); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return fail(fmt.Errorf("load datapath objects: %+v", ve))
		}
		return fail(fmt.Errorf("load datapath objects: %w", err))
	}
	for _, st := range d.VerifierStats() {
		d.log.Info("program verified", "program", st.Program, "insns", st.Insns, "stackDepth", st.StackDepth, "maxFrame", st.MaxStack())
	}
	d.log.Info("established fast path checksums", "direct", direct)
	if err := fillCRCTables(d.objs.CrcShift, d.objs.CrcNib); err != nil {
		d.objs.Close()
		return fail(err)
	}
	if err := d.migrate(olds, false); err != nil {
		d.log.Warn("pinned map migration", "err", err)
	}
	if err := d.loadIndex(); err != nil {
		d.objs.Close()
		return fail(err)
	}
	if err := d.loadSlots(); err != nil {
		d.objs.Close()
		return fail(err)
	}
	if err := d.migrate(olds, true); err != nil {
		d.log.Warn("pinned map migration", "err", err)
	}
	d.pending = olds
	for _, op := range olds {
		d.migrations = append(d.migrations, op.report)
	}
	// After the migrations above: a conntrack migrated from an older
	// release holds its IPv4 entries too.
	if rep, err := d.splitConntrack(false); err != nil {
		d.log.Warn("conntrack split", "err", err)
	} else if rep.Entries > 0 {
		d.splitPending = true
		d.migrations = append(d.migrations, rep)
		d.logMigration(rep)
	}
	// Counts may be off after a crash, an eviction or a migration: they are
	// recomputed from the connections themselves.
	if err := d.recomputeActiveLocked(); err != nil {
		d.log.Warn("recompute active connection counts", "err", err)
	}
	if err := d.fillFilterFromConntrack(); err != nil {
		d.objs.Close()
		d.netns.Close()
		return nil, err
	}
	// The note map is not pinned; the taken-up associations' entries are.
	if err := d.noteTakenUpFromConntrack(); err != nil {
		d.log.Warn("note taken-up SCTP associations", "err", err)
	}
	return d, nil
}

func monotonicNow() uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return uint64(time.Now().UnixNano())
	}
	return uint64(ts.Nano())
}

// Close releases the Go handles but keeps pinned maps and attachments, so the
// datapath keeps forwarding while the daemon restarts.
func (d *Datapath) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	errs = append(errs, d.completeMigrationLocked())
	for name, a := range d.attached {
		if a.link != nil {
			errs = append(errs, a.link.Close())
		}
		if a.xdp != nil {
			errs = append(errs, a.xdp.Close())
		}
		delete(d.attached, name)
	}
	if d.sock != nil {
		d.sock.close()
		d.sock = nil
	}
	errs = append(errs, d.objs.Close())
	if d.netns.IsOpen() {
		errs = append(errs, d.netns.Close())
		d.netns = netns.None()
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close datapath: %w", err)
	}
	return nil
}

// Destroy detaches from every interface and removes the pinned state.
func (d *Datapath) Destroy() error {
	var errs []error
	for _, name := range d.Interfaces() {
		if err := d.Detach(name); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, unpinSockLinks(d.cfg.PinPath))
	// Links pinned by an earlier process that this one never re-attached.
	for _, dir := range []string{filepath.Join(d.cfg.PinPath, "links"), filepath.Join(d.cfg.PinPath, "links", "xdp")} {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if l, err := link.LoadPinnedLink(filepath.Join(dir, e.Name()), nil); err == nil {
				errs = append(errs, l.Unpin(), l.Close())
			}
		}
	}
	errs = append(errs, d.Close())
	if err := os.RemoveAll(d.cfg.PinPath); err != nil {
		errs = append(errs, fmt.Errorf("remove pin path: %w", err))
	}
	return errors.Join(errs...)
}
