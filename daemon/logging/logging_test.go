package logging

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

type sent struct {
	msg  string
	prio journal.Priority
	vars map[string]string
}

func recorder() (*[]sent, SendFunc) {
	var got []sent
	return &got, func(m string, p journal.Priority, v map[string]string) error {
		got = append(got, sent{m, p, v})
		return nil
	}
}

func TestJournalCoreFields(t *testing.T) {
	got, send := recorder()
	log := zap.New(NewJournalCore(zapcore.DebugLevel, send, nil)).With(zap.String("registry", "111122223333.dkr.ecr.us-east-1.amazonaws.com"))
	exp := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	log.Warn("token refresh failed",
		zap.String(KeyRegion, "us-east-1"),
		zap.Time(KeyExpiresAt, exp),
		zap.Error(errors.New("ThrottlingException: rate exceeded")),
		zap.Int("attempt", 3),
		zap.String("error_class", "throttled"),
		zap.String("_bad.key", "x"),
		zap.Strings("hosts", []string{"a", "b"}),
	)
	if len(*got) != 1 {
		t.Fatalf("sent %d entries", len(*got))
	}
	e := (*got)[0]
	if e.msg != "token refresh failed" || e.prio != journal.PriWarning {
		t.Errorf("message %q priority %d", e.msg, e.prio)
	}
	want := map[string]string{
		"REGISTRY":          "111122223333.dkr.ecr.us-east-1.amazonaws.com",
		"REGION":            "us-east-1",
		"EXPIRES_AT":        "2026-01-02T03:04:05Z",
		"ERROR":             "ThrottlingException: rate exceeded",
		"ATTEMPT":           "3",
		"ERROR_CLASS":       "throttled",
		"BAD_KEY":           "x",
		"HOSTS":             "a,b",
		"SYSLOG_IDENTIFIER": "ecr-node-auth",
	}
	for k, v := range want {
		if e.vars[k] != v {
			t.Errorf("%s=%q, want %q (all: %v)", k, e.vars[k], v, e.vars)
		}
	}
}

func TestJournalPriorityAndLevel(t *testing.T) {
	tests := []struct {
		log  func(*zap.Logger)
		want journal.Priority
	}{
		{func(l *zap.Logger) { l.Info("i") }, journal.PriInfo},
		{func(l *zap.Logger) { l.Warn("w") }, journal.PriWarning},
		{func(l *zap.Logger) { l.Error("e") }, journal.PriErr},
	}
	for _, tt := range tests {
		got, send := recorder()
		l := zap.New(NewJournalCore(zapcore.InfoLevel, send, nil))
		l.Debug("hidden")
		tt.log(l)
		if len(*got) != 1 || (*got)[0].prio != tt.want {
			t.Errorf("got %+v, want one entry at priority %d", *got, tt.want)
		}
	}
}

func TestFieldName(t *testing.T) {
	for in, want := range map[string]string{
		"registry": "REGISTRY", "expiresAt": "EXPIRES_AT", "lastRefresh": "LAST_REFRESH",
		"expires_at": "EXPIRES_AT", "error": "ERROR", "a.b-c": "A_B_C", "_x": "X", "1a": "F_1A", "": "F_",
		"roleARN": "ROLE_ARN", "http2Addr": "HTTP2_ADDR",
	} {
		if got := FieldName(in); got != want {
			t.Errorf("FieldName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestNewFormats(t *testing.T) {
	tests := []struct {
		name, format     string
		tty, journal     bool
		wantFormat       string
		wantStderrPrefix string
	}{
		{"auto under systemd", "auto", false, true, FormatJournal, ""},
		{"auto on a tty", "auto", true, false, FormatConsole, "20"},
		{"auto in a pipe", "", false, false, FormatJSON, "{"},
		{"forced json under systemd", "json", true, true, FormatJSON, "{"},
		{"forced console", "console", false, true, FormatConsole, "20"},
		{"forced journal", "journal", true, false, FormatJournal, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			got, send := recorder()
			l, format, err := New(Options{Level: "info", Format: tt.format, Stderr: &buf,
				IsTTY: func() bool { return tt.tty }, JournalStream: func() bool { return tt.journal }, Send: send})
			if err != nil {
				t.Fatal(err)
			}
			if format != tt.wantFormat {
				t.Errorf("format %q, want %q", format, tt.wantFormat)
			}
			l.Info("hello", zap.String("registry", "r"))
			if tt.wantFormat == FormatJournal {
				if len(*got) != 1 || buf.Len() != 0 {
					t.Errorf("journal: sent %v, stderr %q", *got, buf.String())
				}
				return
			}
			if len(*got) != 0 || !strings.HasPrefix(buf.String(), tt.wantStderrPrefix) || !strings.Contains(buf.String(), "hello") {
				t.Errorf("stderr %q", buf.String())
			}
			if tt.wantFormat == FormatJSON {
				var m map[string]any
				if err := json.Unmarshal(buf.Bytes(), &m); err != nil || m["registry"] != "r" || m["msg"] != "hello" {
					t.Errorf("json %q: %v", buf.String(), err)
				}
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	if _, _, err := New(Options{Level: "loud"}); err == nil || !strings.Contains(err.Error(), `log level "loud" is not one of debug, info, warn, error`) {
		t.Errorf("level: %v", err)
	}
	if _, _, err := New(Options{Format: "xml"}); err == nil || !strings.Contains(err.Error(), `log format "xml" is not one of auto, json, console, journal`) {
		t.Errorf("format: %v", err)
	}
}

func TestJournalFallback(t *testing.T) {
	var buf bytes.Buffer
	l, _, err := New(Options{Format: "journal", Stderr: &buf,
		Send: func(string, journal.Priority, map[string]string) error { return errors.New("no journald") }})
	if err != nil {
		t.Fatal(err)
	}
	l.With(zap.String("registry", "r")).Info("still logged")
	if !strings.Contains(buf.String(), `"msg":"still logged"`) || !strings.Contains(buf.String(), `"registry":"r"`) {
		t.Errorf("fallback output %q", buf.String())
	}
}
