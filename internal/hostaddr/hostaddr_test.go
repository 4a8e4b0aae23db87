package hostaddr

import (
	"errors"
	"testing"
)

// The expectations are what Chromium's new URL('https://' + host).hostname
// answers (and inet_aton, for the forms it accepts).
func TestParse(t *testing.T) {
	for _, c := range []struct {
		host    string
		want    string // "" for a host name
		invalid bool
	}{
		{host: "127.0.0.1", want: "127.0.0.1"},
		{host: "127.1", want: "127.0.0.1"},
		{host: "127.0.1", want: "127.0.0.1"},
		{host: "2130706433", want: "127.0.0.1"},
		{host: "0x7f000001", want: "127.0.0.1"},
		{host: "0X7F000001", want: "127.0.0.1"},
		{host: "0x7f.1", want: "127.0.0.1"},
		{host: "0177.0.0.1", want: "127.0.0.1"},
		{host: "017700000001", want: "127.0.0.1"},
		{host: "0", want: "0.0.0.0"},
		{host: "0x", want: "0.0.0.0"},
		{host: "127.0.0.1.", want: "127.0.0.1"},
		{host: "10.0.258", want: "10.0.1.2"},
		{host: "192.168.257", want: "192.168.1.1"},
		{host: "3232235777", want: "192.168.1.1"},
		{host: "0xa9.0xfe.0xa9.0xfe", want: "169.254.169.254"},
		{host: "134744072", want: "8.8.8.8"},
		{host: "08.8.8.8", invalid: true}, // 8 is no octal digit
		{host: "1.2.3.4.5", invalid: true},
		{host: "256.0.0.1", invalid: true},
		{host: "1.2.3.256", invalid: true},
		{host: "4294967296", invalid: true},
		{host: "99999999999999999999999", invalid: true},
		{host: "1..2", invalid: true},
		{host: "foo.123", invalid: true},
		{host: "foo.0x10", invalid: true},
		{host: "0x1g", want: ""}, // not a number: a (strange) host name
		{host: "example.com", want: ""},
		{host: "example.com.", want: ""},
		{host: "1example.com", want: ""},
		{host: "123.example", want: ""},
		{host: "localhost", want: ""},
		{host: "", want: ""},
		{host: "::1", want: "::1"},
		{host: "::ffff:127.0.0.1", want: "::ffff:127.0.0.1"},
		{host: "fe80::1%eth0", want: "fe80::1"},
		{host: "::g", invalid: true},
	} {
		addr, literal, err := Parse(c.host)
		switch {
		case c.invalid:
			if !literal || !errors.Is(err, ErrInvalid) {
				t.Errorf("Parse(%q) = %v, %v, %v; want an ErrInvalid", c.host, addr, literal, err)
			}
		case c.want == "":
			if literal || err != nil {
				t.Errorf("Parse(%q) = %v, %v, %v; want a host name", c.host, addr, literal, err)
			}
		default:
			if !literal || err != nil || addr.String() != c.want {
				t.Errorf("Parse(%q) = %v, %v, %v; want %s", c.host, addr, literal, err, c.want)
			}
		}
	}
}

func TestCanonical(t *testing.T) {
	for host, want := range map[string]string{
		"127.1": "127.0.0.1", "0x7f000001": "127.0.0.1", "0": "0.0.0.0", "8.8.8.8": "8.8.8.8",
		"example.com": "example.com", "1.2.3.4.5": "1.2.3.4.5",
	} {
		if got := Canonical(host); got != want {
			t.Errorf("Canonical(%q) = %q, want %q", host, got, want)
		}
	}
}
