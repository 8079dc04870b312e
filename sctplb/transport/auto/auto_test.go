package auto

import (
	"os"
	"testing"

	"github.com/telcolb/telcolb/scenarios/lab"
	"github.com/telcolb/telcolb/sctplb/transport/kernel"
)

func TestOpenRejectsUnknownMode(t *testing.T) {
	if _, _, _, err := Open(Config{Mode: "quantum"}); err == nil {
		t.Fatal("want an error")
	}
}

// TestOpenFallsBackToUserspace checks the run-time choice: kernel SCTP when
// the kernel has it, usrsctp otherwise. The usrsctp stack would see every
// SCTP packet of its namespace, so it is started in a lab namespace.
func TestOpenChoosesByKernelSupport(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("usrsctp raw mode needs root")
	}
	want := Userspace
	if kernel.Available() == nil {
		want = Kernel
	}
	l := lab.NewEmpty(t)
	h, err := l.AddHost(t.Context(), "n2")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Do(func() error {
		tr, mode, closer, err := Open(Config{})
		if err != nil {
			return err
		}
		defer closer.Close()
		if mode != want || tr == nil {
			t.Errorf("Open chose %q, want %q", mode, want)
		}
		if want == Userspace {
			if _, _, _, err := Open(Config{Mode: Kernel}); err == nil {
				t.Error("forcing kernel SCTP without kernel support must fail")
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
