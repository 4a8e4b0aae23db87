// Package sink is the delivery stage of relay: everything between a
// committed outbox event and the attempt recorded for each webhook. Its
// packages follow the flow, each with one job:
//
//	outbox (capture, upstream of sink)
//	  │ outbox.Event
//	  ▼
//	fanout    match subscriptions, INSERT deliveries (hand fresh ones to dispatch;
//	          events dispatch sent ahead are written behind, finished when answered)
//	  │ relay.deliveries
//	  ▼
//	dispatch  claim due deliveries, hold them per subscription, render, sign
//	  │ send.Request
//	  ▼
//	send      the HTTP client (net/http) and the address guard in its dialer
//	  │ send.Result
//	  ▼
//	record    attempt rows, delivery status, subscription health and alerts
//
// Beside the flow, pure packages that import nothing of PostgreSQL or
// HTTP: format (request bodies) and the policies policy/classify (what an
// answer means), policy/retry (when to try again) and policy/window (when
// deliveries may go out). Imports go one way, downstream or to the pure
// packages; the test in this folder enforces it.
//
// This package holds no code of its own: its tests run the whole stage end
// to end, against a real PostgreSQL and real receivers on 127.0.0.1.
package sink
