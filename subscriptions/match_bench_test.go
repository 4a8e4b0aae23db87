package subscriptions_test

import (
	"testing"

	"github.com/pgoutbox/relay/subscriptions"
)

// BenchmarkMatchAny matches one event type against a subscription's
// typical patterns (the last one matches). Fan-out matches in SQL; this is
// the same rule in Go, used by the API and the console.
func BenchmarkMatchAny(b *testing.B) {
	patterns := []string{"invoice.*", "message.sent", "thread.archived", "analysis.*", "thread.created"}
	b.ReportAllocs()
	for b.Loop() {
		if !subscriptions.MatchAny(patterns, "thread.created") {
			b.Fatal("no match")
		}
	}
}
