"""Which destinations a server-side fetch may reach: pure rules, no I/O.

An address is reachable when it is globally routable unicast, or when an entry
of the allow-list (``LITHO_OUTBOUND_ALLOW``) covers it. IPv4-mapped IPv6
addresses are judged as the IPv4 address they carry; 6to4 and NAT64 addresses
are denied when the IPv4 address they embed would be.
"""

from __future__ import annotations

import logging
import string
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from yarl import URL

from litho.errors import ConfigError, OutboundDenied

_log = logging.getLogger(__name__)

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

#: The only text a caller ever sees for a refused destination.
DENIED_MESSAGE = "destination not allowed"

ALLOWED_SCHEMES = frozenset({"http", "https"})

# IANA special-purpose IPv4 blocks that are not globally reachable. Written out
# rather than taken from ``ipaddress.is_global``, whose answers differ between
# Python patch releases (and call multicast "global").
_DENIED_V4 = tuple(
    IPv4Network(n)
    for n in (
        "0.0.0.0/8",  # "this network"; Linux connects 0.0.0.0 to the local host
        "10.0.0.0/8",
        "100.64.0.0/10",  # CGNAT shared address space
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, where cloud metadata services live
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # TEST-NET-1
        "192.88.99.0/24",  # deprecated 6to4 relay anycast
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # TEST-NET-2
        "203.0.113.0/24",  # TEST-NET-3
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, including the broadcast 255.255.255.255
    )
)

# IPv6 is judged the other way round: only global unicast (2000::/3) can be
# public, which excludes ::, ::1, IPv4-compatible ::/96, fc00::/7, fe80::/10,
# fec0::/10, ff00::/8, 100::/64 and 64:ff9b:1::/48 in one rule.
_GLOBAL_UNICAST_V6 = IPv6Network("2000::/3")
_DENIED_V6 = tuple(
    IPv6Network(n)
    for n in (
        "2001::/23",  # IETF protocol assignments, including Teredo 2001::/32
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation
    )
)
_NAT64_V6 = IPv6Network("64:ff9b::/96")


@dataclass(frozen=True, slots=True)
class AllowEntry:
    """A network that bypasses the deny rules, on one port or (``None``) on all."""

    network: IPNetwork
    port: int | None = None

    def covers(self, address: IPAddress, port: int) -> bool:
        return (
            address.version == self.network.version
            and address in self.network
            and (self.port is None or self.port == port)
        )


@dataclass(frozen=True, slots=True)
class AllowList:
    """The parsed ``LITHO_OUTBOUND_ALLOW``; empty means nothing bypasses the rules."""

    entries: tuple[AllowEntry, ...] = ()

    @classmethod
    def parse(cls, text: str) -> AllowList:
        """Parse comma-separated entries: ``127.0.0.1``, ``10.0.0.0/8``,
        ``127.0.0.1:8081``, ``127.0.0.0/8:8081``, ``::1``, ``[::1]:9000``.

        Raises :class:`ConfigError` naming ``LITHO_OUTBOUND_ALLOW`` on a malformed entry.
        """
        return cls(tuple(_parse_entry(item.strip()) for item in text.split(",") if item.strip()))

    def permits(self, address: IPAddress, port: int) -> bool:
        return any(entry.covers(address, port) for entry in self.entries)


def _parse_entry(text: str) -> AllowEntry:
    def bad(why: str) -> ConfigError:
        return ConfigError(
            f"LITHO_OUTBOUND_ALLOW: invalid entry {text!r} ({why}); expected an IP or CIDR, "
            "optionally with :port, e.g. 127.0.0.1:8081, [::1]:9000, 10.0.0.0/8"
        )

    port_text: str | None = None
    if text.startswith("["):
        address_text, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise bad("unbalanced brackets")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        address_text, _, port_text = text.partition(":")
    else:
        # Bare IPv6 needs no port; an IPv6 entry with a port must use brackets.
        address_text = text
    try:
        network = ip_network(address_text, strict=True)
    except ValueError as exc:
        raise bad(str(exc)) from exc
    port = None
    if port_text is not None:
        if not (port_text.isascii() and port_text.isdigit() and 0 < int(port_text) < 65536):
            raise bad("port must be 1-65535")
        port = int(port_text)
    return AllowEntry(network, port)


def _embedded_v4(address: IPv6Address) -> IPv4Address | None:
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64_V6:
        return IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _globally_routable(address: IPAddress) -> bool:
    if isinstance(address, IPv4Address):
        return not any(address in net for net in _DENIED_V4)
    embedded = _embedded_v4(address)
    if embedded is not None:
        return _globally_routable(embedded)
    return address in _GLOBAL_UNICAST_V6 and not any(address in net for net in _DENIED_V6)


def _normalise(ip: str | IPAddress) -> IPAddress | None:
    try:
        address = ip_address(ip) if isinstance(ip, str) else ip
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_public_address(ip: str | IPAddress, port: int, allow: AllowList | None = None) -> bool:
    """Whether a fetch may connect to ``ip``:``port``.

    True for globally routable unicast addresses and for anything ``allow``
    covers; False for loopback, private, CGNAT, link-local, unique-local,
    unspecified, multicast, reserved, documentation and broadcast addresses,
    for IPv4-mapped/6to4/NAT64 forms of those, and for text that is not an IP.
    """
    address = _normalise(ip)
    if address is None:
        return False
    if allow is not None and allow.permits(address, port):
        return True
    return _globally_routable(address)


def log_denial(reason: str, host: str | None, port: int | None) -> None:
    """Record why a destination was refused; the caller only ever sees DENIED_MESSAGE."""
    _log.info("outbound fetch denied: %s (host=%s port=%s)", reason, host, port)


def deny(reason: str, host: str | None, port: int | None = None) -> OutboundDenied:
    """Log why a destination was refused and build the generic error for the caller."""
    log_denial(reason, host, port)
    return OutboundDenied(DENIED_MESSAGE)


def _is_localhost_name(host: str) -> bool:
    name = host.rstrip(".")
    return name == "localhost" or name.endswith(".localhost")


def _ends_in_number(host: str) -> bool:
    """WHATWG's test for a host a browser would parse as IPv4 (``127.1``, ``0x7f.1``)."""
    labels = host.split(".")
    if len(labels) > 1 and labels[-1] == "":
        labels.pop()
    last = labels[-1]
    if last.isascii() and last.isdigit():
        return True
    return last[:2] == "0x" and all(c in string.hexdigits for c in last[2:])


def vet_url(url: str | URL, allow: AllowList) -> URL:
    """Parse ``url`` and apply every rule that needs no DNS; return the parsed URL.

    Host names are left to the resolver, except ``localhost`` names, which are
    always refused. Numeric IPv4 hosts must be canonical dotted quads: the legacy
    forms (``2130706433``, ``0x7f.1``, ``127.1``, ``0177.0.0.1``) are refused
    outright rather than interpreted.
    """
    try:
        parsed = url if isinstance(url, URL) else URL(url)
    except (TypeError, ValueError):
        raise deny("malformed URL", None) from None
    scheme = parsed.scheme.lower()
    host = parsed.raw_host
    port = parsed.port
    if scheme not in ALLOWED_SCHEMES:
        raise deny(f"scheme {scheme!r} is not http or https", host, port)
    if not host:
        raise deny("URL has no host", host, port)
    if port is None or not 0 < port < 65536:
        raise deny("invalid port", host, port)
    host = host.lower()
    if ":" in host:
        try:
            address: IPAddress = IPv6Address(host)
        except ValueError:
            raise deny("malformed IPv6 literal", host, port) from None
    elif _ends_in_number(host):
        try:
            address = IPv4Address(host)
        except ValueError:
            raise deny("non-canonical numeric IPv4 host", host, port) from None
    elif _is_localhost_name(host):
        raise deny("localhost name", host, port)
    else:
        return parsed
    if not is_public_address(address, port, allow):
        raise deny(f"address {address} is not public and not allow-listed", host, port)
    return parsed


def check_url(url: str | URL, allow: AllowList | None = None) -> None:
    """Cheap synchronous pre-check (scheme, IP literals, ``localhost``) for use
    before queueing work; raises :class:`OutboundDenied`. Host names are only
    vetted when :meth:`OutboundGuard.fetch` resolves them."""
    vet_url(url, allow or AllowList())
