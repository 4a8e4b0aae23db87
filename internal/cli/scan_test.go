package cli_test

import "fmt"

func fmtSscanf(s string, events, delivered, retried, failed, verified, bad *int) (int, error) {
	return fmt.Sscanf(s, "summary: events=%d delivered=%d retried=%d failed=%d (signatures verified by the receiver: %d, bad: %d)",
		events, delivered, retried, failed, verified, bad)
}
