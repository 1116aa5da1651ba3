"""The SSRF guard: a webhook may only reach public addresses, and only the one that was checked.

A URL someone saves (or a journey names) could point Cadenza at itself, the internal network
or a cloud metadata service. The guard refuses those, in every spelling:

- **Names** that are internal by definition (`localhost`, `*.localhost`, `*.internal` such as
  `metadata.google.internal`, `*.local`, `metadata`, `instance-data`) are refused before any
  lookup; trailing dots and upper case do not help.
- **Literals** in every encoding: dotted, decimal (`2130706433`), octal (`0177.0.0.1`), hex
  (`0x7f000001`, `0x7f.0.0.1`), short (`127.1`), IPv6 (`[::1]`, `[::ffff:7f00:1]`, zone ids).
  They are parsed as the C library's `inet_aton` parses them, so what is checked is what a
  socket would reach. A percent-encoded host is refused outright.
- **Resolution**: a name is resolved and *every* answer must be public. Refused: private
  (10/8, 172.16/12, 192.168/16), loopback, link-local (169.254/16 with the metadata address
  169.254.169.254, fe80::/10), carrier-grade NAT 100.64/10, unspecified, multicast, broadcast,
  reserved, unique-local fc00::/7 (with AWS's fd00:ec2::254), and IPv6 forms that carry a
  refused IPv4 address: IPv4-mapped (`::ffff:127.0.0.1`), IPv4-compatible (`::127.0.0.1`),
  6to4 (2002::/16), NAT64 (64:ff9b::/96), and Teredo (2001::/32) altogether.
- **Pinning**: the HTTP transport built here resolves and checks inside its own connect and
  opens the socket to the address it checked. There is no second lookup for a rebinding DNS
  server to answer differently; the request still carries the original Host header and TLS
  server name (certificates are verified against the name, not the address).

Operators who do need a private target allow-list networks explicitly (`allow_networks`, the
setting `CADENZA_WEBHOOK_ALLOW_NETWORKS`); an allow-listed answer passes, everything else is
still refused. Redirects are never followed (the webhook channel treats 3xx as an error), so a
public endpoint cannot bounce a request inward.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import httpcore
import httpx

from cadenza.channels.errors import ChannelError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""(host, port) -> the addresses the host resolves to, as text."""


async def system_resolver(host: str, port: int) -> list[str]:
    """The operating system's resolver (getaddrinfo), off the event loop."""
    infos = await asyncio.to_thread(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class UrlRefused(ChannelError):
    """A webhook URL points where Cadenza must not go; never retried."""

    code = "webhook.url_refused"

    def __init__(self, url: str, reason: str) -> None:
        super().__init__("webhook", f"{url[:200]!r} is refused: {reason}", retryable=False)
        self.url = url
        self.why = reason

    def context(self) -> dict[str, object]:
        return {**super().context(), "url": self.url[:200]}


class ResolutionFailed(ChannelError):
    """A host name did not resolve (retryable: DNS outages end)."""

    code = "webhook.resolution_failed"

    def __init__(self, host: str, reason: str) -> None:
        super().__init__("webhook", f"{host!r} does not resolve: {reason}", retryable=True)
        self.host = host


_BLOCKED_NAMES = frozenset({"localhost", "metadata", "instance-data", "metadata.goog",
                            "ip6-localhost", "ip6-loopback"})
_BLOCKED_SUFFIXES = (".localhost", ".internal", ".local", ".localdomain", ".home.arpa",
                     ".metadata.goog")

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network
_V4_REASONS: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_V4("169.254.169.254/32"), "the cloud instance metadata address"),
    (_V4("127.0.0.0/8"), "a loopback address"),
    (_V4("10.0.0.0/8"), "a private network address"),
    (_V4("172.16.0.0/12"), "a private network address"),
    (_V4("192.168.0.0/16"), "a private network address"),
    (_V4("169.254.0.0/16"), "a link-local address"),
    (_V4("100.64.0.0/10"), "a carrier-grade NAT (shared) address"),
    (_V4("0.0.0.0/8"), "an unspecified ('this network') address"),
    (_V4("255.255.255.255/32"), "the broadcast address"),
    (_V4("224.0.0.0/4"), "a multicast address"),
    (_V4("240.0.0.0/4"), "a reserved address"),
)
_V6_REASONS: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_V6("fd00:ec2::254/128"), "the AWS instance metadata address (IPv6)"),
    (_V6("::1/128"), "the IPv6 loopback address"),
    (_V6("::/128"), "the unspecified IPv6 address"),
    (_V6("fe80::/10"), "an IPv6 link-local address"),
    (_V6("fc00::/7"), "an IPv6 unique-local (private) address"),
    (_V6("ff00::/8"), "an IPv6 multicast address"),
    (_V6("2001::/32"), "a Teredo tunnel address"),
    (_V6("64:ff9b:1::/48"), "a local-use NAT64 address"),
    (_V6("fec0::/10"), "a deprecated site-local IPv6 address"),
)
_NAT64 = _V6("64:ff9b::/96")
_COMPAT = _V6("::/96")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, str] | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, 6to4, NAT64), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped, "IPv4-mapped"
    if ip.sixtofour is not None:
        return ip.sixtofour, "6to4"
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "NAT64"
    if ip in _COMPAT and int(ip) > 1:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "IPv4-compatible"
    return None


def address_refusal(ip: IPAddress) -> str | None:
    """Why Cadenza must not connect to `ip`, or None for a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        ip = ipaddress.IPv6Address(int(ip))  # drop a zone id
        embedded = embedded_ipv4(ip)
        if embedded is not None:
            inner, form = embedded
            if form == "IPv4-compatible":
                return f"an IPv4-compatible IPv6 address (deprecated) carrying {inner}"
            why = address_refusal(inner)
            return f"a {form} IPv6 address carrying {inner}, {why}" if why else None
        for network, reason in _V6_REASONS:
            if ip in network:
                return reason
    else:
        for network4, reason in _V4_REASONS:
            if ip in network4:
                return reason
    if not ip.is_global or ip.is_multicast or ip.is_reserved:
        return "not a public address"
    return None


def parse_ipv4_literal(text: str) -> ipaddress.IPv4Address | None:
    """`text` as the C library's inet_aton reads it (1 to 4 parts, each decimal, 0-octal or
    0x-hex, the last filling the remaining bytes), or None when it is not such a literal."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values: list[int] = []
    for part in parts:
        value = _inet_number(part)
        if value is None:
            return None
        values.append(value)
    *head, last = values
    if any(v > 0xFF for v in head) or last >= 1 << (8 * (4 - len(head))):
        return None
    number = last
    for index, value in enumerate(head):
        number |= value << (8 * (3 - index))
    return ipaddress.IPv4Address(number)


def _inet_number(part: str) -> int | None:
    lower = part.lower()
    try:
        if lower.startswith("0x"):
            digits = lower[2:]
            if not digits or not all(c in "0123456789abcdef" for c in digits):
                return None
            return int(digits, 16)
        if not lower.isascii() or not lower.isdigit():
            return None
        if len(lower) > 1 and lower.startswith("0"):
            return int(lower, 8)
        return int(lower)
    except ValueError:
        return None


def parse_literal(host: str) -> IPAddress | None:
    """The address `host` spells directly (any IPv4 encoding, IPv6 with brackets or a zone
    id), or None when it is a name."""
    text = host.strip().removeprefix("[").removesuffix("]").rstrip(".")
    if ":" in text:
        address, _, _zone = text.partition("%")
        try:
            return ipaddress.IPv6Address(address)
        except ValueError:
            return None
    return parse_ipv4_literal(text)


def parse_networks(values: Iterable[str], setting: str = "allow_networks") -> tuple[Network, ...]:
    """CIDR texts as networks; ValueError naming the bad entry."""
    networks: list[Network] = []
    for value in values:
        text = value.strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"{setting}: {text!r} is not a network; write CIDR such as "
                             "10.20.0.0/16 or fd12:3456::/48") from None
    return tuple(networks)


class SsrfGuard:
    """Decides whether a URL may be called and which address to connect to."""

    def __init__(self, allow_networks: Sequence[Network] = (),
                 resolver: Resolver = system_resolver) -> None:
        self.allow_networks = tuple(allow_networks)
        self.resolver = resolver

    def allowed(self, ip: IPAddress) -> bool:
        """True when an operator allow-listed a network holding `ip` (or the IPv4 address it
        carries)."""
        candidates: list[IPAddress] = [ip]
        if isinstance(ip, ipaddress.IPv6Address):
            ip = ipaddress.IPv6Address(int(ip))
            candidates = [ip]
            embedded = embedded_ipv4(ip)
            if embedded is not None:
                candidates.append(embedded[0])
        return any(c in n for c in candidates for n in self.allow_networks
                   if c.version == n.version)

    def check_shape(self, url: httpx.URL | str) -> httpx.URL:
        """Scheme, host and spelling checks that need no lookup; the parsed URL."""
        raw = str(url)
        try:
            parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise UrlRefused(raw, f"it is not a URL ({exc})") from None
        if parsed.scheme not in ("http", "https"):
            raise UrlRefused(raw, "only http:// and https:// URLs are called")
        host = parsed.host
        if not host:
            raise UrlRefused(raw, "it names no host")
        if "%" in host and ":" not in host:
            raise UrlRefused(raw, "percent-encoded host names are not accepted; write the "
                             "host as plain text")
        literal = parse_literal(host)
        if literal is not None:
            self._check_address(raw, literal)
        return parsed

    async def resolve(self, host: str, port: int, url: str | None = None) -> list[str]:
        """Every address `host` stands for, each checked; the ones to connect to, in order.
        Raises UrlRefused when any answer is refused, ResolutionFailed when none comes."""
        shown = url or host
        literal = parse_literal(host)
        if literal is not None:
            self._check_address(shown, literal)
            if isinstance(literal, ipaddress.IPv6Address):
                return [str(ipaddress.IPv6Address(int(literal)))]  # without a zone id
            return [str(literal)]
        name = host.strip().rstrip(".").lower()
        if not name:
            raise UrlRefused(shown, "it names no host")
        blocked = _blocked_name(name)
        if blocked and not self.allow_networks:
            raise UrlRefused(shown, blocked)  # no lookup needed
        try:
            answers = list(await self.resolver(name, port))
        except (OSError, UnicodeError) as exc:
            raise ResolutionFailed(name, str(exc)) from None
        if not answers:
            raise ResolutionFailed(name, "no addresses")
        addresses: list[IPAddress] = []
        for answer in answers:
            try:
                addresses.append(ipaddress.ip_address(answer.partition("%")[0]))
            except ValueError:
                raise UrlRefused(shown, f"the resolver answered {answer!r}, which is not an "
                                 "address") from None
        if blocked and not all(self.allowed(a) for a in addresses):
            raise UrlRefused(shown, blocked)
        for address in addresses:
            self._check_address(shown, address, via=name)
        return list(dict.fromkeys(str(a) for a in addresses))

    async def check(self, url: httpx.URL | str) -> httpx.URL:
        """The full check a saved URL gets: shape, then every resolved address."""
        parsed = self.check_shape(url)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        await self.resolve(parsed.host, port, str(url))
        return parsed

    def _check_address(self, url: str, ip: IPAddress, via: str | None = None) -> None:
        if self.allowed(ip):
            return
        why = address_refusal(ip)
        if why is not None:
            where = f"{via!r} resolves to {ip}, " if via else f"{ip} is "
            raise UrlRefused(url, f"{where}{why} (allow-list its network in "
                             "CADENZA_WEBHOOK_ALLOW_NETWORKS if this is intended)")

    def transport(self, *, verify: ssl.SSLContext | bool = True,
                  limits: httpx.Limits | None = None) -> httpx.AsyncBaseTransport:
        """An httpx transport whose connections go only to addresses this guard checked."""
        return PinnedTransport(self, verify=verify, limits=limits or httpx.Limits())


def _blocked_name(name: str) -> str | None:
    if name in _BLOCKED_NAMES or name.endswith(_BLOCKED_SUFFIXES):
        return f"{name!r} is an internal host name"
    return None


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """Resolves and checks in `connect_tcp`, then connects to a checked address: the lookup
    that was checked is the lookup that is used."""

    def __init__(self, guard: SsrfGuard) -> None:
        self._guard = guard
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None
                          ) -> httpcore.AsyncNetworkStream:
        addresses = await self._guard.resolve(host, port)
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(address, port, timeout, local_address,
                                                     socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # resolve() never returns an empty list
        raise failure

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None
                                  ) -> httpcore.AsyncNetworkStream:
        raise UrlRefused(path, "unix sockets are not webhook targets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with the pinned network backend (no proxies from the environment)."""

    def __init__(self, guard: SsrfGuard, *, verify: ssl.SSLContext | bool = True,
                 limits: httpx.Limits) -> None:
        super().__init__(verify=verify, trust_env=False, limits=limits)
        context = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(
            verify=verify, trust_env=False)
        # httpx builds its pool without a way to pass a network backend; this replaces it
        # with an equivalent pool that has one (the only private attribute touched).
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context, max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry, network_backend=_PinnedBackend(guard))
