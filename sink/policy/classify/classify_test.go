package classify

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"
)

// refused stands for the errors of the packages that refuse a request
// before sending it (the sender's tests check its own errors are
// permanent).
type refused struct{ permanent bool }

func (e refused) Error() string   { return "refused" }
func (e refused) Permanent() bool { return e.permanent }

func TestClassify(t *testing.T) {
	t.Parallel()
	forbidden := refused{permanent: true}
	cases := []struct {
		name   string
		status int
		err    error
		want   Verdict
	}{
		{"200", 200, nil, VerdictSucceeded},
		{"201", 201, nil, VerdictSucceeded},
		{"204", 204, nil, VerdictSucceeded},
		{"299", 299, nil, VerdictSucceeded},
		{"408 request timeout", 408, nil, VerdictRetry},
		{"425 too early", 425, nil, VerdictRetry},
		{"429 too many requests", 429, nil, VerdictRetry},
		{"500", 500, nil, VerdictRetry},
		{"502", 502, nil, VerdictRetry},
		{"503", 503, nil, VerdictRetry},
		{"599", 599, nil, VerdictRetry},
		{"410 gone", 410, nil, VerdictGone},
		{"301", 301, nil, VerdictFail},
		{"302", 302, nil, VerdictFail},
		{"304", 304, nil, VerdictFail},
		{"307", 307, nil, VerdictFail},
		{"308", 308, nil, VerdictFail},
		{"400", 400, nil, VerdictFail},
		{"401", 401, nil, VerdictFail},
		{"403", 403, nil, VerdictFail},
		{"404", 404, nil, VerdictFail},
		{"405", 405, nil, VerdictFail},
		{"413", 413, nil, VerdictFail},
		{"422", 422, nil, VerdictFail},
		{"499", 499, nil, VerdictFail},
		{"100 as final status", 100, nil, VerdictRetry},
		{"101", 101, nil, VerdictRetry},
		{"600 non-standard", 600, nil, VerdictRetry},
		{"999 non-standard", 999, nil, VerdictRetry},
		{"no status, no error", 0, nil, VerdictRetry},
		{"timeout", 0, fmt.Errorf("timeout after 10s: %w", context.DeadlineExceeded), VerdictRetry},
		{"connection refused", 0, syscall.ECONNREFUSED, VerdictRetry},
		{"tls", 0, errors.New("tls: failed to verify certificate: x509: certificate signed by unknown authority"), VerdictRetry},
		{"canceled", 0, context.Canceled, VerdictRetry},
		{"permanent", 0, forbidden, VerdictFail},
		{"permanent, wrapped", 0, fmt.Errorf("dial tcp: %w", forbidden), VerdictFail},
		{"permanent wins over a status", 200, forbidden, VerdictFail},
		{"Permanent() false is not permanent", 0, refused{}, VerdictRetry},
		{"status wins over a body read error", 200, errors.New("unexpected EOF"), VerdictSucceeded},
		{"503 with body read error", 503, errors.New("unexpected EOF"), VerdictRetry},
	}
	for _, tc := range cases {
		if got := Classify(tc.status, tc.err); got != tc.want {
			t.Errorf("%s: Classify(%d, %v) = %v, want %v", tc.name, tc.status, tc.err, got, tc.want)
		}
	}
}

func TestVerdictString(t *testing.T) {
	t.Parallel()
	for v, want := range map[Verdict]string{
		VerdictSucceeded: "succeeded",
		VerdictRetry:     "retry",
		VerdictFail:      "failed",
		VerdictGone:      "gone",
		0:                "Verdict(0)",
		Verdict(42):      "Verdict(42)",
	} {
		if got := v.String(); got != want {
			t.Errorf("Verdict(%d).String() = %q, want %q", int(v), got, want)
		}
	}
}

func TestDisablingAnswer(t *testing.T) {
	for _, c := range []struct {
		code int
		body string
		want bool
	}{
		{404, "no_service", true},
		{404, "no_service\n", true},
		{410, "channel_is_archived", true},
		{404, `{"message": "Unknown Webhook", "code": 10015}`, true},
		{404, `{"message": "Unknown Channel", "code": 10003}`, false},
		{404, "not found", false},
		{400, "no_service", false},
		{404, `{"code": "10015"}`, false},
	} {
		reason, ok := DisablingAnswer(c.code, c.body)
		if ok != c.want || ok == (reason == "") {
			t.Errorf("DisablingAnswer(%d, %q) = %q, %v; want %v", c.code, c.body, reason, ok, c.want)
		}
	}
}
