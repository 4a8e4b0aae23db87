package send

import (
	"fmt"
	"net/netip"
	"strings"
	"syscall"
)

// ErrForbiddenAddress is matched (with errors.Is) by every *ForbiddenAddressError.
// Callers branch on it to fail a delivery at once instead of retrying it: a
// refused destination stays refused until an operator changes the allow list.
var ErrForbiddenAddress error = refusal("forbidden address")

// Address classes reported in ForbiddenAddressError.Class.
const (
	ClassLoopback    = "loopback"
	ClassPrivate     = "private"    // RFC 1918
	ClassLinkLocal   = "link-local" // includes the 169.254.169.254 metadata service
	ClassCGNAT       = "shared (CGNAT)"
	ClassMulticast   = "multicast"
	ClassUnspecified = "unspecified"
	ClassThisNetwork = "this-network" // 0.0.0.0/8
	ClassBroadcast   = "broadcast"
	ClassReserved    = "reserved" // 240.0.0.0/4
	ClassUniqueLocal = "unique-local"
	ClassSiteLocal   = "site-local" // fec0::/10, deprecated but still private
	ClassInvalid     = "invalid"
)

// ForbiddenAddressError reports a destination address the AddressGuard refused.
type ForbiddenAddressError struct {
	// Addr is the address that was dialed (or checked), as given.
	Addr netip.Addr
	// Class names why it is refused, one of the Class* constants.
	Class string
	// Embedded is the IPv4 address carried inside an IPv6 Addr (IPv4-mapped,
	// IPv4-compatible, NAT64 or 6to4) when that embedded address is the reason
	// for the refusal; otherwise it is the zero Addr.
	Embedded netip.Addr
}

func (e *ForbiddenAddressError) Error() string {
	var b strings.Builder
	b.WriteString("address ")
	if e.Addr.IsValid() {
		b.WriteString(e.Addr.String())
	} else {
		b.WriteString("(invalid)")
	}
	b.WriteString(" is ")
	b.WriteString(e.Class)
	if e.Embedded.IsValid() {
		b.WriteString(" (embeds IPv4 ")
		b.WriteString(e.Embedded.String())
		b.WriteString(")")
	}
	b.WriteString("; refused (allow it with --allow-cidr)")
	return b.String()
}

// Permanent reports true (see classify.IsPermanent): a refused
// destination stays refused until an operator changes the allow list.
func (e *ForbiddenAddressError) Permanent() bool { return true }

// Is makes errors.Is(err, ErrForbiddenAddress) true.
func (e *ForbiddenAddressError) Is(target error) bool { return target == ErrForbiddenAddress }

type classRange struct {
	prefix netip.Prefix
	class  string
}

// Checked in order; the first match wins (broadcast comes before the
// reserved 240/4 block that contains it).
var forbiddenV4 = []classRange{
	{netip.MustParsePrefix("0.0.0.0/32"), ClassUnspecified},
	{netip.MustParsePrefix("0.0.0.0/8"), ClassThisNetwork},
	{netip.MustParsePrefix("127.0.0.0/8"), ClassLoopback},
	{netip.MustParsePrefix("10.0.0.0/8"), ClassPrivate},
	{netip.MustParsePrefix("172.16.0.0/12"), ClassPrivate},
	{netip.MustParsePrefix("192.168.0.0/16"), ClassPrivate},
	{netip.MustParsePrefix("169.254.0.0/16"), ClassLinkLocal},
	{netip.MustParsePrefix("100.64.0.0/10"), ClassCGNAT},
	{netip.MustParsePrefix("224.0.0.0/4"), ClassMulticast},
	{netip.MustParsePrefix("255.255.255.255/32"), ClassBroadcast},
	{netip.MustParsePrefix("240.0.0.0/4"), ClassReserved},
}

var forbiddenV6 = []classRange{
	{netip.MustParsePrefix("::/128"), ClassUnspecified},
	{netip.MustParsePrefix("::1/128"), ClassLoopback},
	{netip.MustParsePrefix("fe80::/10"), ClassLinkLocal},
	{netip.MustParsePrefix("fec0::/10"), ClassSiteLocal},
	{netip.MustParsePrefix("fc00::/7"), ClassUniqueLocal},
	{netip.MustParsePrefix("ff00::/8"), ClassMulticast},
}

var (
	nat64Prefix  = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour    = netip.MustParsePrefix("2002::/16")
	v4CompatZero = netip.MustParsePrefix("::/96")
)

// AddressGuard refuses destination addresses that a webhook must not reach:
// loopback, RFC 1918 private ranges, link-local (including the cloud metadata
// address 169.254.169.254), CGNAT 100.64.0.0/10, multicast, unspecified,
// 0.0.0.0/8, broadcast, the reserved 240.0.0.0/4, IPv6 unique-local and
// site-local, and any IPv6 address that embeds such an IPv4 address
// (IPv4-mapped ::ffff:a.b.c.d, IPv4-compatible ::a.b.c.d, NAT64 64:ff9b::/96,
// 6to4 2002::/16). An address inside one of the allow-list prefixes is always
// accepted, whatever its class.
//
// A nil *AddressGuard behaves like a guard with an empty allow list.
// An AddressGuard is immutable and safe for concurrent use.
type AddressGuard struct {
	allow []netip.Prefix
}

// NewAddressGuard returns a guard that accepts the addresses inside
// allowCIDRs (e.g. "127.0.0.0/8" for receivers on the same host in tests, or
// "10.1.2.0/24" for an internal endpoint). A bare address ("10.0.0.7" or
// "::1") is read as a single-address prefix. Empty entries are ignored.
func NewAddressGuard(allowCIDRs []string) (*AddressGuard, error) {
	g := &AddressGuard{}
	for _, s := range allowCIDRs {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		var p netip.Prefix
		if strings.Contains(s, "/") {
			var err error
			p, err = netip.ParsePrefix(s)
			if err != nil {
				return nil, fmt.Errorf("invalid allow CIDR %q: want a prefix such as 10.0.0.0/8 or fd00::/8", s)
			}
		} else {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("invalid allow CIDR %q: want a prefix such as 10.0.0.0/8 or fd00::/8", s)
			}
			a = a.WithZone("")
			p = netip.PrefixFrom(a, a.BitLen())
		}
		g.allow = append(g.allow, p.Masked())
	}
	return g, nil
}

// AllowList returns the allow-list prefixes, normalised (masked).
func (g *AddressGuard) AllowList() []netip.Prefix {
	if g == nil {
		return nil
	}
	return append([]netip.Prefix(nil), g.allow...)
}

// Check returns nil when ip may be dialed, and a *ForbiddenAddressError
// otherwise. Any IPv6 zone is ignored.
func (g *AddressGuard) Check(ip netip.Addr) error {
	if !ip.IsValid() {
		return &ForbiddenAddressError{Addr: ip, Class: ClassInvalid}
	}
	addr := ip.WithZone("")
	embedded, hasEmbedded := embeddedIPv4(addr)
	if g.allowed(addr) || (hasEmbedded && g.allowed(embedded)) {
		return nil
	}
	if addr.Is4() {
		if c := classify4(addr); c != "" {
			return &ForbiddenAddressError{Addr: ip, Class: c}
		}
		return nil
	}
	if c := classify6(addr); c != "" {
		return &ForbiddenAddressError{Addr: ip, Class: c}
	}
	if hasEmbedded {
		if c := classify4(embedded); c != "" {
			return &ForbiddenAddressError{Addr: ip, Class: c, Embedded: embedded}
		}
	}
	return nil
}

// Control has the signature of net.Dialer.Control. The dialer calls it with
// the literal address about to be dialed, after name resolution, so a host
// name that resolves (or re-resolves, as in DNS rebinding) to a forbidden
// address is refused for every address tried. The returned error is the
// *ForbiddenAddressError itself; net wraps it in a *net.OpError.
func (g *AddressGuard) Control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		// Not an IP:port (a unix socket, say): nothing a webhook may dial.
		return fmt.Errorf("%w: cannot check %s address %q", ErrForbiddenAddress, network, address)
	}
	return g.Check(ap.Addr())
}

func (g *AddressGuard) allowed(a netip.Addr) bool {
	if g == nil {
		return false
	}
	for _, p := range g.allow {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func classify4(a netip.Addr) string {
	for _, r := range forbiddenV4 {
		if r.prefix.Contains(a) {
			return r.class
		}
	}
	return ""
}

func classify6(a netip.Addr) string {
	for _, r := range forbiddenV6 {
		if r.prefix.Contains(a) {
			return r.class
		}
	}
	return ""
}

// embeddedIPv4 extracts the IPv4 address an IPv6 address carries in one of
// the well-known translation forms. Reports false for a plain IPv4 address
// and for IPv6 addresses with no embedded IPv4.
func embeddedIPv4(a netip.Addr) (netip.Addr, bool) {
	if !a.Is6() {
		return netip.Addr{}, false
	}
	if a.Is4In6() {
		return a.Unmap(), true
	}
	b := a.As16()
	switch {
	case v4CompatZero.Contains(a):
		// ::a.b.c.d (deprecated IPv4-compatible). :: and ::1 are classified
		// as IPv6 unspecified and loopback before this is consulted.
		return netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}), true
	case nat64Prefix.Contains(a):
		return netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}), true
	case sixToFour.Contains(a):
		return netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]}), true
	}
	return netip.Addr{}, false
}
