package pfcp

import (
	"fmt"

	pfcplog "github.com/wmnsk/go-pfcp"
	"github.com/wmnsk/go-pfcp/message"
)

// Validate decodes b with github.com/wmnsk/go-pfcp, an independent decoder
// that parses grouped IEs recursively, and returns an error wrapping
// ErrMalformed (kind InvalidLength) if it fails. go-pfcp has panicked on
// crafted input in the past; a panic is recovered and reported as an error.
func Validate(b []byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = malformed(InvalidLength, 0, "go-pfcp panicked: %v", r)
		}
	}()
	if _, err := message.Parse(b); err != nil {
		return malformed(InvalidLength, 0, "go-pfcp: %v", err)
	}
	return nil
}

// Decode returns go-pfcp's view of b (for tests and tools), with panics
// recovered.
func Decode(b []byte) (m message.Message, err error) {
	defer func() {
		if r := recover(); r != nil {
			m, err = nil, fmt.Errorf("%w: go-pfcp panicked: %v", ErrMalformed, r)
		}
	}()
	m, err = message.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%w: go-pfcp: %v", ErrMalformed, err)
	}
	return m, nil
}

// SilenceLibraryLogs turns off go-pfcp's logging (it logs every message of
// an unknown type through the standard logger).
func SilenceLibraryLogs() { pfcplog.DisableLogging() }
