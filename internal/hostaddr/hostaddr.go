// Package hostaddr reads the host of a URL the way browsers (the WHATWG URL
// standard) and libc's inet_aton do, so that relay sees the same address a
// receiver's URL really names.
//
// IPv4 has shorthand forms that look like host names to a naive parser:
// https://127.1, https://2130706433, https://0x7f000001, https://0177.0.0.1,
// https://0 and https://127.0.0.1. all name an address (the last two
// 0.0.0.0 and 127.0.0.1). Left as names they would reach the resolver on
// every attempt (and fail there, or worse, be answered by a DNS server), and
// they would slip past a check that only recognises dotted quads. Parse
// turns every such form into its address, and reports the hosts that look
// numeric but are no valid address, which browsers refuse too.
//
// The package is pure: standard library only, no I/O.
package hostaddr

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strings"
)

// ErrInvalid is matched (errors.Is) by the error Parse returns for a host
// that ends in a number but is not a valid IPv4 address (1.2.3.4.5, 256.1,
// 0x1g).
var ErrInvalid = errors.New("invalid numeric host")

// Parse reads host, a URL's host without its port and without the brackets
// of an IPv6 literal (url.URL.Hostname gives that).
//
//   - An IP literal in any form browsers accept returns its address and
//     literal true: dotted quads, the shorthand IPv4 forms (fewer parts, hex
//     0x…, octal 0…, one trailing dot) and IPv6 (zone removed).
//   - A host name returns literal false and no error: the resolver's job.
//   - A host whose last label is a number (the WHATWG "ends in a number"
//     rule) but which is no valid IPv4 address returns literal true and an
//     error wrapping ErrInvalid: browsers refuse such URLs.
func Parse(host string) (addr netip.Addr, literal bool, err error) {
	if strings.Contains(host, ":") {
		a, err := netip.ParseAddr(host)
		if err != nil {
			return netip.Addr{}, true, fmt.Errorf("%w: %q is not an IPv6 address", ErrInvalid, host)
		}
		return a.WithZone(""), true, nil
	}
	if !endsInNumber(host) {
		return netip.Addr{}, false, nil
	}
	a, err := parseIPv4(host)
	if err != nil {
		return netip.Addr{}, true, fmt.Errorf("%w: %q ends in a number but is not an IPv4 address (%s)", ErrInvalid, host, err)
	}
	return a, true, nil
}

// Canonical returns the canonical spelling of host when it is an IP literal
// written in a shorthand form (127.1 gives 127.0.0.1), and host unchanged
// otherwise (names, canonical literals, invalid hosts).
func Canonical(host string) string {
	a, literal, err := Parse(host)
	if !literal || err != nil {
		return host
	}
	return a.String()
}

// labels splits host on dots, dropping one trailing empty label (the
// trailing dot of a fully qualified name).
func labels(host string) []string {
	parts := strings.Split(host, ".")
	if len(parts) > 1 && parts[len(parts)-1] == "" {
		parts = parts[:len(parts)-1]
	}
	return parts
}

// endsInNumber is the WHATWG "ends in a number" checker: the last label is
// all decimal digits, or parses as an IPv4 number (0x…).
func endsInNumber(host string) bool {
	parts := labels(host)
	last := parts[len(parts)-1]
	if last == "" {
		return false
	}
	if strings.Trim(last, "0123456789") == "" {
		return true
	}
	_, err := parseNumber(last)
	return err == nil
}

// parseIPv4 is the WHATWG IPv4 parser: one to four numbers; every number
// but the last fills one byte, the last fills the remaining bytes.
func parseIPv4(host string) (netip.Addr, error) {
	parts := labels(host)
	if len(parts) > 4 {
		return netip.Addr{}, fmt.Errorf("%d parts, at most 4", len(parts))
	}
	nums := make([]uint64, len(parts))
	for i, p := range parts {
		n, err := parseNumber(p)
		if err != nil {
			return netip.Addr{}, err
		}
		nums[i] = n
	}
	for _, n := range nums[:len(nums)-1] {
		if n > 255 {
			return netip.Addr{}, fmt.Errorf("part %d is above 255", n)
		}
	}
	last := nums[len(nums)-1]
	if last >= uint64(1)<<(8*(5-len(nums))) {
		return netip.Addr{}, fmt.Errorf("last part %d is too large", last)
	}
	v := last
	for i, n := range nums[:len(nums)-1] {
		v += n << (8 * (3 - i))
	}
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), nil
}

// parseNumber is the WHATWG IPv4 number parser: 0x or 0X starts a
// hexadecimal number, a leading 0 an octal one, anything else is decimal;
// "0x" alone is zero.
func parseNumber(s string) (uint64, error) {
	if s == "" {
		return 0, errors.New("empty part")
	}
	radix := uint64(10)
	switch {
	case len(s) >= 2 && (s[:2] == "0x" || s[:2] == "0X"):
		s, radix = s[2:], 16
	case len(s) >= 2 && s[0] == '0':
		s, radix = s[1:], 8
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		d := digit(s[i])
		if d >= radix {
			return 0, fmt.Errorf("%q is not a base-%d number", s, radix)
		}
		if n > (math.MaxUint64-d)/radix {
			return 0, errors.New("number too large")
		}
		n = n*radix + d
	}
	return n, nil
}

func digit(c byte) uint64 {
	switch {
	case c >= '0' && c <= '9':
		return uint64(c - '0')
	case c >= 'a' && c <= 'f':
		return uint64(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return uint64(c-'A') + 10
	}
	return 99
}
