package logging

import (
	"testing"

	"github.com/aws/smithy-go/logging"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestSDKLogger(t *testing.T) {
	tests := []struct {
		name    string
		min     zapcore.Level
		class   logging.Classification
		want    zapcore.Level
		dropped bool
	}{
		{"warn", zapcore.InfoLevel, logging.Warn, zapcore.WarnLevel, false},
		{"debug shown at debug", zapcore.DebugLevel, logging.Debug, zapcore.DebugLevel, false},
		{"debug dropped at info", zapcore.InfoLevel, logging.Debug, 0, true},
		{"unknown class is debug", zapcore.DebugLevel, logging.Classification("INFO"), zapcore.DebugLevel, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			core, logs := observer.New(tt.min)
			SDK(zap.New(core)).Logf(tt.class, "falling back to %s", "IMDSv1")
			all := logs.All()
			if tt.dropped {
				if len(all) != 0 {
					t.Fatalf("logged %v, want nothing", all)
				}
				return
			}
			if len(all) != 1 || all[0].Level != tt.want || all[0].LoggerName != "sdk" || all[0].Message != "falling back to IMDSv1" {
				t.Fatalf("logged %+v, want one %s line from sdk", all, tt.want)
			}
		})
	}
	SDK(nil).Logf(logging.Warn, "dropped") // must not panic
}
