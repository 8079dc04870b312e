package usrsctp

import (
	"context"
	"testing"
	"time"
)

// usrsctp frees a socket twice when its timer or receive thread takes a
// reference on it during usrsctp_close (release.go), which those threads
// do only while the socket still has an association. Closing with echoes
// in flight, gracefully or by abort, must therefore hand usrsctp only
// sockets whose association is gone.
func TestCloseHandsUsrsctpNoSocketWithAnAssociation(t *testing.T) {
	s := testStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	before := s.ClosedWithAssociation()
	const n = 10
	for i := 0; i < n; i++ {
		c, err := s.Dial(ctx, cliAddrs, srvAddrs, echoPort)
		if err != nil {
			t.Fatal(err)
		}
		// Echoes still coming back when the socket closes: the receive
		// thread is busy with the association.
		for j := 0; j < 5; j++ {
			if err := c.SendMsg(ctx, []byte("in flight"), uint16(j%2), 0); err != nil {
				t.Fatal(err)
			}
		}
		if i%2 == 0 {
			err = c.Close()
		} else {
			err = c.Abort()
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	// The graceful closes finish their SHUTDOWN exchange in the background.
	s.releasing.Wait()
	if got := s.ClosedWithAssociation() - before; got != 0 {
		t.Errorf("%d of %d sockets handed to usrsctp_close while usrsctp still held their association", got, n)
	}
}
