package subscriptions

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Free text in a subscription (its name, owner, header values, template)
// ends up in terminals (relay subs list), logs, HTTP requests and web
// pages. Control characters have no business there: ESC and BEL sequences
// can rewrite an operator's terminal, NUL cannot be stored by PostgreSQL at
// all (it answered 500), and CR/LF or other controls in a header value are
// refused by the sender on every attempt. They are refused when written,
// here and in relay.validate_subscription, with the same messages.

// Characters checkText lets through, by context.
const (
	allowNone     = ""
	allowTab      = "\t"     // header values: HTAB is legal in a field value
	allowTemplate = "\t\n\r" // templates are multi-line text
)

// isControl reports whether r is a C0 control (U+0000–U+001F), DEL
// (U+007F) or a C1 control (U+0080–U+009F).
func isControl(r rune) bool {
	return r < 0x20 || (r >= 0x7f && r <= 0x9f)
}

// checkText refuses s when it is not valid UTF-8 or holds a control
// character other than those in allow. field names the column; what starts
// the message ("name", `headers: the value of "X-Api-Key"`).
func checkText(field, what, s, allow string) error {
	if !utf8.ValidString(s) {
		return invalid(field, what+" must be valid UTF-8 text")
	}
	for _, r := range s {
		if isControl(r) && !strings.ContainsRune(allow, r) {
			return invalid(field, fmt.Sprintf("%s must not contain control characters (found U+%04X)", what, r))
		}
	}
	return nil
}
