// Package logging builds the daemon's zap logger: journal fields under
// systemd, a console format on a terminal, JSON elsewhere.
//
// Field keys are lower camel or snake case in code ("registry", "region",
// "expiresAt", "error"); the journal sees them upper-cased (REGISTRY=,
// REGION=, EXPIRES_AT=, ERROR=) so `journalctl -u ecr-node-auth REGISTRY=…`
// works. A secret is never a field.
package logging

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/coreos/go-systemd/v22/journal"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Field keys shared by the daemon's log lines.
const (
	KeyRegistry  = "registry"
	KeyRegion    = "region"
	KeyExpiresAt = "expiresAt"
	KeyError     = "error"
)

// Formats accepted by New.
const (
	FormatAuto    = "auto"
	FormatJSON    = "json"
	FormatConsole = "console"
	FormatJournal = "journal"
)

// Options selects the output; zero fields take the process's real ones.
type Options struct {
	Level  string // debug, info, warn, error ("" = info)
	Format string // auto, json, console, journal ("" = auto)

	// Stderr receives console and JSON output (default os.Stderr).
	Stderr io.Writer
	// IsTTY reports whether Stderr is a terminal (default: os.Stderr is a
	// character device).
	IsTTY func() bool
	// JournalStream reports whether stderr is connected to the journal
	// (default: journal.StderrIsJournalStream, i.e. JOURNAL_STREAM).
	JournalStream func() bool
	// Send writes one journal entry (default journal.Send).
	Send SendFunc
}

// ParseLevel reads a level name.
func ParseLevel(s string) (zapcore.Level, error) {
	switch strings.ToLower(s) {
	case "", "info":
		return zapcore.InfoLevel, nil
	case "debug":
		return zapcore.DebugLevel, nil
	case "warn", "warning":
		return zapcore.WarnLevel, nil
	case "error":
		return zapcore.ErrorLevel, nil
	}
	return 0, fmt.Errorf("log level %q is not one of debug, info, warn, error", s)
}

// New returns a logger for opts and the format it chose (auto resolved).
func New(opts Options) (*zap.Logger, string, error) {
	level, err := ParseLevel(opts.Level)
	if err != nil {
		return nil, "", err
	}
	opts.defaults()
	format := opts.Format
	if format == "" || format == FormatAuto {
		switch {
		case opts.JournalStream():
			format = FormatJournal
		case opts.IsTTY():
			format = FormatConsole
		default:
			format = FormatJSON
		}
	}
	var core zapcore.Core
	switch format {
	case FormatJournal:
		core = NewJournalCore(level, opts.Send, jsonCore(opts.Stderr, level))
	case FormatConsole:
		ec := zap.NewDevelopmentEncoderConfig()
		ec.EncodeTime = zapcore.ISO8601TimeEncoder
		ec.EncodeLevel = zapcore.CapitalLevelEncoder
		core = zapcore.NewCore(zapcore.NewConsoleEncoder(ec), zapcore.AddSync(opts.Stderr), level)
	case FormatJSON:
		core = jsonCore(opts.Stderr, level)
	default:
		return nil, "", fmt.Errorf("log format %q is not one of auto, json, console, journal", opts.Format)
	}
	return zap.New(core, zap.ErrorOutput(zapcore.AddSync(opts.Stderr))), format, nil
}

func jsonCore(w io.Writer, level zapcore.LevelEnabler) zapcore.Core {
	ec := zap.NewProductionEncoderConfig()
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	ec.TimeKey = "time"
	return zapcore.NewCore(zapcore.NewJSONEncoder(ec), zapcore.AddSync(w), level)
}

func (o *Options) defaults() {
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	if o.IsTTY == nil {
		o.IsTTY = func() bool {
			st, err := os.Stderr.Stat()
			return err == nil && st.Mode()&os.ModeCharDevice != 0
		}
	}
	if o.JournalStream == nil {
		o.JournalStream = func() bool {
			ok, err := journal.StderrIsJournalStream()
			return ok && err == nil
		}
	}
	if o.Send == nil {
		o.Send = journal.Send
	}
}
