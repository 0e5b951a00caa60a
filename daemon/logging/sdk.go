package logging

import (
	"fmt"

	"github.com/aws/smithy-go/logging"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// SDK adapts log to the AWS SDK's logger (aws.Config.Logger, set with
// config.WithLogger), under the name "sdk", so the SDK's own lines (e.g.
// "falling back to IMDSv1") are structured like the daemon's instead of raw
// "SDK 2026/..." text on stderr. Warn classifications log at warn, anything
// else at debug. A nil log drops everything.
//
// No secret reaches it: the SDK logs request or response bodies and signing
// details only when aws.Config.ClientLogMode asks, and every caller keeps
// ClientLogMode at 0.
func SDK(log *zap.Logger) logging.Logger {
	if log == nil {
		return logging.Nop{}
	}
	return sdkLogger{log.Named("sdk")}
}

type sdkLogger struct{ l *zap.Logger }

func (s sdkLogger) Logf(c logging.Classification, format string, v ...any) {
	level := zapcore.DebugLevel
	if c == logging.Warn {
		level = zapcore.WarnLevel
	}
	if !s.l.Core().Enabled(level) {
		return // formatting is not free; debug is off in production
	}
	s.l.Log(level, fmt.Sprintf(format, v...))
}
