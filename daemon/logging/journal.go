package logging

import (
	"fmt"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
	"go.uber.org/zap/zapcore"
)

// SyslogIdentifier is the journal's SYSLOG_IDENTIFIER for every entry.
const SyslogIdentifier = "ecr-node-auth"

// SendFunc writes one entry to the journal; journal.Send is the real one
// (it always uses /run/systemd/journal/socket, so tests inject their own).
type SendFunc func(message string, priority journal.Priority, vars map[string]string) error

// journalCore is a zapcore.Core that writes through the journal's native
// protocol, one journal field per log field.
type journalCore struct {
	zapcore.LevelEnabler
	send     SendFunc
	fields   map[string]string // from With, already converted
	fallback zapcore.Core      // gets the entry when send fails; may be nil
}

// NewJournalCore returns a core that sends entries at or above level. When
// send fails (journald gone), the entry goes to fallback if it is not nil.
func NewJournalCore(level zapcore.LevelEnabler, send SendFunc, fallback zapcore.Core) zapcore.Core {
	return &journalCore{LevelEnabler: level, send: send, fields: map[string]string{}, fallback: fallback}
}

func (c *journalCore) With(fields []zapcore.Field) zapcore.Core {
	n := &journalCore{LevelEnabler: c.LevelEnabler, send: c.send, fields: make(map[string]string, len(c.fields)+len(fields))}
	if c.fallback != nil {
		n.fallback = c.fallback.With(fields)
	}
	for k, v := range c.fields {
		n.fields[k] = v
	}
	addFields(n.fields, fields)
	return n
}

func (c *journalCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *journalCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	vars := make(map[string]string, len(c.fields)+len(fields)+4)
	for k, v := range c.fields {
		vars[k] = v
	}
	addFields(vars, fields)
	vars["SYSLOG_IDENTIFIER"] = SyslogIdentifier
	if e.LoggerName != "" {
		vars["LOGGER"] = e.LoggerName
	}
	if e.Caller.Defined {
		vars["CODE_FILE"] = e.Caller.File
		vars["CODE_LINE"] = fmt.Sprint(e.Caller.Line)
		if e.Caller.Function != "" {
			vars["CODE_FUNC"] = e.Caller.Function
		}
	}
	if e.Stack != "" {
		vars["STACK"] = e.Stack
	}
	// PRIORITY and MESSAGE are written by send itself.
	delete(vars, "PRIORITY")
	delete(vars, "MESSAGE")
	err := c.send(e.Message, priority(e.Level), vars)
	if err != nil && c.fallback != nil {
		return c.fallback.Write(e, fields)
	}
	return err
}

func (c *journalCore) Sync() error { return nil }

func priority(l zapcore.Level) journal.Priority {
	switch {
	case l <= zapcore.DebugLevel:
		return journal.PriDebug
	case l == zapcore.InfoLevel:
		return journal.PriInfo
	case l == zapcore.WarnLevel:
		return journal.PriWarning
	case l == zapcore.ErrorLevel:
		return journal.PriErr
	default:
		return journal.PriCrit
	}
}

// addFields encodes zap fields as journal variables.
func addFields(dst map[string]string, fields []zapcore.Field) {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fields {
		f.AddTo(enc)
	}
	for k, v := range enc.Fields {
		dst[FieldName(k)] = value(v)
	}
}

func value(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case time.Time:
		return v.UTC().Format(time.RFC3339)
	case time.Duration:
		return v.String()
	case []byte:
		return string(v)
	case []any:
		// A list (e.g. the hosts sharing one ECR token) becomes "a,b" so
		// that REGISTRY=<host> matches the common one-host case exactly.
		parts := make([]string, len(v))
		for i, x := range v {
			parts[i] = value(x)
		}
		return strings.Join(parts, ",")
	}
	return fmt.Sprint(v)
}

// FieldName turns a log key into a valid journal field name: camelCase and
// other separators become '_', letters upper case ("expiresAt" ->
// "EXPIRES_AT"), no leading underscore or digit (those are reserved).
func FieldName(k string) string {
	var b strings.Builder
	prevLower := false
	for _, r := range k {
		switch {
		case r >= 'a' && r <= 'z':
			b.WriteRune(r - 'a' + 'A')
			prevLower = true
		case r >= 'A' && r <= 'Z':
			if prevLower {
				b.WriteByte('_')
			}
			b.WriteRune(r)
			prevLower = false
		case r >= '0' && r <= '9':
			b.WriteRune(r)
			prevLower = true
		default:
			if s := b.String(); s != "" && !strings.HasSuffix(s, "_") {
				b.WriteByte('_')
			}
			prevLower = false
		}
	}
	name := strings.TrimRight(b.String(), "_")
	if name == "" || name[0] >= '0' && name[0] <= '9' {
		name = "F_" + name
	}
	return name
}
