package refresh

import (
	"testing"
	"time"
)

func TestRepeats(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	type step struct {
		key     string
		at      time.Duration
		reset   bool
		loud    bool
		repeats int
	}
	tests := []struct {
		name   string
		rewarn time.Duration
		steps  []step
	}{
		{"identical failures are loud once", time.Hour, []step{
			{key: "a", loud: true}, {key: "a", at: time.Minute, repeats: 1}, {key: "a", at: 2 * time.Minute, repeats: 2}}},
		{"a new key is loud", time.Hour, []step{
			{key: "a", loud: true}, {key: "b", at: time.Minute, loud: true}, {key: "a", at: 2 * time.Minute, loud: true}}},
		{"loud again after rewarn", time.Hour, []step{
			{key: "a", loud: true}, {key: "a", at: 59 * time.Minute, repeats: 1},
			{key: "a", at: 61 * time.Minute, loud: true, repeats: 2}, {key: "a", at: 62 * time.Minute, repeats: 3}}},
		{"rewarn 0 never again", 0, []step{
			{key: "a", loud: true}, {key: "a", at: 48 * time.Hour, repeats: 1}}},
		{"loud after reset", time.Hour, []step{
			{key: "a", loud: true}, {reset: true}, {key: "a", at: time.Minute, loud: true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r Repeats
			for i, s := range tt.steps {
				if s.reset {
					r.Reset()
					continue
				}
				loud, n := r.Failure(s.key, t0.Add(s.at), tt.rewarn)
				if loud != s.loud || n != s.repeats {
					t.Errorf("step %d: loud=%v repeats=%d, want %v %d", i, loud, n, s.loud, s.repeats)
				}
			}
		})
	}
}
