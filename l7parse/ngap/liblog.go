package ngap

import (
	"io"

	aperlog "github.com/free5gc/aper/logger"
)

// SilenceLibraryLogs stops free5gc's aper package from writing its own
// logrus lines to stderr (the decoder prints one or more per malformed PDU,
// which a misbehaving peer could turn into a log flood). The proxy already
// counts and logs malformed PDUs through slog. It changes process-wide state
// of that library, so daemons call it once at start; NewDecoder does not.
func SilenceLibraryLogs() {
	aperlog.GetLogger().SetOutput(io.Discard)
}
