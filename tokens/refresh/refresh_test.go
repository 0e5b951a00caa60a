package refresh

import (
	"testing"
	"time"
)

type fixedRand float64

func (f fixedRand) Float64() float64 { return float64(f) }

func TestAt(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name     string
		lifetime time.Duration
		jitter   float64
		want     time.Duration // after t0
	}{
		{"12h no jitter", 12 * time.Hour, 0, 6 * time.Hour},
		{"12h max jitter", 12 * time.Hour, 0.999999, 7*time.Hour + 12*time.Minute},
		{"1h no jitter", time.Hour, 0, 30 * time.Minute},
		{"1h max jitter", time.Hour, 0.999999, 36 * time.Minute},
		{"15s", 15 * time.Second, 0.5, 8250 * time.Millisecond},
		{"expired", -time.Second, 0.5, 0},
		{"zero", 0, 0.5, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := At(t0, t0.Add(tt.lifetime), fixedRand(tt.jitter)).Sub(t0)
			if d := got - tt.want; d < -10*time.Millisecond || d > 10*time.Millisecond {
				t.Fatalf("At = +%v, want +%v", got, tt.want)
			}
			if tt.lifetime > 0 {
				if latest := tt.lifetime - Margin(tt.lifetime); got > latest {
					t.Fatalf("At = +%v is later than expiry minus margin (+%v)", got, latest)
				}
			}
		})
	}
}

func TestMargin(t *testing.T) {
	for _, tt := range []struct{ lifetime, want time.Duration }{
		{12 * time.Hour, time.Hour},
		{time.Hour, 15 * time.Minute},
		{15 * time.Second, 3750 * time.Millisecond},
		{0, 0},
		{-time.Hour, 0},
	} {
		if got := Margin(tt.lifetime); got != tt.want {
			t.Errorf("Margin(%v) = %v, want %v", tt.lifetime, got, tt.want)
		}
	}
}

func TestBackoff(t *testing.T) {
	tests := []struct {
		class    Class
		attempt  int
		jitter   float64
		min, max time.Duration
	}{
		{Transient, 0, 0, time.Second, time.Second},
		{Transient, 0, 0.99, 1900 * time.Millisecond, 2 * time.Second}, // the first retry is jittered too
		{Transient, 1, 0.999, 3 * time.Second, 4 * time.Second},
		{Transient, 2, 0.999, 7 * time.Second, 8 * time.Second},
		{Throttled, 3, 0.999, 15 * time.Second, 16 * time.Second},
		{Transient, 30, 0.999, 119 * time.Second, 2 * time.Minute},
		{Transient, 1000, 0, time.Second, time.Second},
		{Permanent, 0, 0.5, 89 * time.Second, 91 * time.Second},
		{Permanent, 2, 0.999, 7 * time.Minute, 8 * time.Minute},
		{Permanent, 50, 0.999, 9 * time.Minute, 10 * time.Minute},
	}
	for _, tt := range tests {
		got := DefaultBackoff(tt.class).Delay(tt.attempt, fixedRand(tt.jitter))
		if got < tt.min || got > tt.max {
			t.Errorf("%v attempt %d jitter %v: delay %v, want in [%v, %v]", tt.class, tt.attempt, tt.jitter, got, tt.min, tt.max)
		}
	}
}
