package vm

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
)

// tree is the content of an initramfs, written as a "newc" cpio archive
// (the format the kernel unpacks; see Documentation/driver-api/early-userspace).
type tree struct {
	entries map[string]*entry
}

type entry struct {
	mode     uint32 // type and permission bits
	hostPath string // file content from the host, or
	data     []byte // inline content (symlink target for links)
	rdevMaj  uint32
	rdevMin  uint32
}

const (
	sIFDIR = 0o040000
	sIFREG = 0o100000
	sIFLNK = 0o120000
	sIFCHR = 0o020000
)

func newTree() *tree { return &tree{entries: map[string]*entry{}} }

func (t *tree) has(p string) bool { _, ok := t.entries[p]; return ok }

func (t *tree) parents(p string) {
	for d := path.Dir(p); d != "/" && d != "."; d = path.Dir(d) {
		if _, ok := t.entries[d]; !ok {
			t.entries[d] = &entry{mode: sIFDIR | 0o755}
		}
	}
}

func (t *tree) dir(ps ...string) {
	for _, p := range ps {
		t.parents(p)
		t.entries[p] = &entry{mode: sIFDIR | 0o755}
	}
}

func (t *tree) dev(p string, maj, min uint32) {
	t.parents(p)
	t.entries[p] = &entry{mode: sIFCHR | 0o600, rdevMaj: maj, rdevMin: min}
}

func (t *tree) symlink(p, target string) {
	t.parents(p)
	t.entries[p] = &entry{mode: sIFLNK | 0o777, data: []byte(target)}
}

func (t *tree) data(p string, b []byte, perm uint32) {
	t.parents(p)
	t.entries[p] = &entry{mode: sIFREG | perm, data: b}
}

// file adds a host file (symlinks followed: the guest gets the content).
func (t *tree) file(p, host string, perm uint32) error {
	if _, err := os.Stat(host); err != nil {
		return fmt.Errorf("vm: image: %w", err)
	}
	t.parents(p)
	t.entries[p] = &entry{mode: sIFREG | perm, hostPath: host}
	return nil
}

// writeCPIO writes the archive, parents before children (sorted paths).
func (t *tree) writeCPIO(out string) error {
	f, err := os.Create(out)
	if err != nil {
		return fmt.Errorf("vm: image: %w", err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	names := make([]string, 0, len(t.entries))
	for p := range t.entries {
		names = append(names, p)
	}
	sort.Strings(names)
	ino := uint32(1)
	for _, p := range names {
		e := t.entries[p]
		var size int64
		var src io.Reader
		switch {
		case e.hostPath != "":
			hf, err := os.Open(e.hostPath)
			if err != nil {
				f.Close()
				return fmt.Errorf("vm: image: %w", err)
			}
			st, err := hf.Stat()
			if err != nil {
				hf.Close()
				f.Close()
				return fmt.Errorf("vm: image: %w", err)
			}
			size, src = st.Size(), hf
		default:
			size = int64(len(e.data))
		}
		if err := writeHeader(w, p[1:], e, ino, size); err != nil {
			f.Close()
			return err
		}
		if hf, ok := src.(*os.File); ok {
			_, err := io.Copy(w, io.LimitReader(hf, size))
			hf.Close()
			if err != nil {
				f.Close()
				return fmt.Errorf("vm: image: %s: %w", e.hostPath, err)
			}
		} else if _, err := w.Write(e.data); err != nil {
			f.Close()
			return fmt.Errorf("vm: image: %w", err)
		}
		if err := pad(w, size); err != nil {
			f.Close()
			return err
		}
		ino++
	}
	if err := writeHeader(w, "TRAILER!!!", &entry{}, 0, 0); err != nil {
		f.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("vm: image: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("vm: image: %w", err)
	}
	return nil
}

func writeHeader(w *bufio.Writer, name string, e *entry, ino uint32, size int64) error {
	nlink := uint32(1)
	if e.mode&0o170000 == sIFDIR {
		nlink = 2
	}
	// newc: magic, then 13 fields of 8 hex digits; the name (NUL included)
	// pads the header to a multiple of 4, so does the data.
	if _, err := fmt.Fprintf(w, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, e.mode, 0, 0, nlink, 0, uint32(size), 0, 0, e.rdevMaj, e.rdevMin, len(name)+1, 0); err != nil {
		return fmt.Errorf("vm: image: %w", err)
	}
	if _, err := w.WriteString(name + "\x00"); err != nil {
		return fmt.Errorf("vm: image: %w", err)
	}
	return pad(w, int64(110+len(name)+1))
}

func pad(w *bufio.Writer, n int64) error {
	if r := n % 4; r != 0 {
		if _, err := w.Write(make([]byte, 4-r)); err != nil {
			return fmt.Errorf("vm: image: %w", err)
		}
	}
	return nil
}
