package bgp

import (
	"context"
	"log/slog"

	glog "github.com/osrg/gobgp/v3/pkg/log"
)

// logAdapter sends gobgp's logs to slog. gobgp logs every FSM step at info
// level; those go to debug, except what says a session failed.
type logAdapter struct {
	log   *slog.Logger
	level glog.LogLevel
}

func (l *logAdapter) emit(lvl slog.Level, msg string, f glog.Fields) {
	if !l.log.Enabled(context.Background(), lvl) {
		return
	}
	attrs := make([]any, 0, 2*len(f))
	for k, v := range f {
		attrs = append(attrs, k, v)
	}
	l.log.Log(context.Background(), lvl, "gobgp: "+msg, attrs...)
}

func (l *logAdapter) Panic(msg string, f glog.Fields) { l.emit(slog.LevelError, msg, f); panic(msg) }
func (l *logAdapter) Fatal(msg string, f glog.Fields) { l.emit(slog.LevelError, msg, f) }
func (l *logAdapter) Error(msg string, f glog.Fields) { l.emit(slog.LevelError, msg, f) }
func (l *logAdapter) Warn(msg string, f glog.Fields)  { l.emit(slog.LevelWarn, msg, f) }
func (l *logAdapter) Info(msg string, f glog.Fields)  { l.emit(slog.LevelDebug, msg, f) }
func (l *logAdapter) Debug(msg string, f glog.Fields) { l.emit(slog.LevelDebug-4, msg, f) }
func (l *logAdapter) SetLevel(level glog.LogLevel)    { l.level = level }
func (l *logAdapter) GetLevel() glog.LogLevel         { return glog.DebugLevel }
