"""Whether paytide may call a URL that a merchant chose (webhook endpoints), and where exactly.

A merchant-controlled URL must never make paytide reach into its own network: loopback, private,
link-local (cloud metadata), shared, multicast, unspecified or reserved addresses, nor those
addresses in disguise (decimal, octal or hex IPv4, IPv4 inside IPv6). The host is resolved and
**every** address it resolves to must pass; the caller then connects to one of those checked
addresses (``Target.pinned_url``) rather than resolving the name again, so a DNS answer that
changes between the check and the connection (rebinding) cannot slip through.

The check runs when an endpoint is registered or its URL changes (api/webhook_endpoints.py) and
again before every delivery (activities/webhook_delivery.py). Operator-set URLs
(``PAYTIDE_MERCHANT_CALLBACK_URL``, ``PAYTIDE_OPS_ALERT_URL``) are not merchant-controlled and
do not go through it.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeAlias
from urllib.parse import urlsplit, urlunsplit

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
# (host, port) -> the addresses the host resolves to, as text ("93.184.216.34", "2606:2800::1").
Resolver: TypeAlias = Callable[[str, int], Awaitable[Sequence[str]]]

# A DNS answer slower than this counts as no answer.
RESOLVE_TIMEOUT_SECONDS = 5.0
# getaddrinfo blocks its thread and cannot be cancelled: for a name whose DNS never answers (a
# merchant controls its endpoint's DNS) the thread stays busy long after the timeout above. The
# lookups get threads of their own, so such names can delay only other lookups (which then time
# out as unresolvable), never the ledger writes that share the event loop's default executor.
LOOKUP_THREADS = 8
_LOOKUPS = ThreadPoolExecutor(max_workers=LOOKUP_THREADS, thread_name_prefix="paytide-dns")

_METADATA = {
    ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack, ...
    ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
    ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
}
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598)
_PRIVATE = (
    ipaddress.ip_network("10.0.0.0/8"),
    ipaddress.ip_network("172.16.0.0/12"),
    ipaddress.ip_network("192.168.0.0/16"),
    ipaddress.ip_network("fc00::/7"),  # unique local
    ipaddress.ip_network("fec0::/10"),  # site-local (deprecated)
)
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # well-known prefix: the IPv4 address is inside
# Anything a resolver might read as an IPv4 address that is not a plain dotted quad:
# 2130706433, 0177.0.0.1, 0x7f.1, 127.1.
_NUMERIC_HOST = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+))*\.?$", re.I)


class Refusal(StrEnum):
    """Why a URL may not be called."""

    SCHEME = "scheme"  # not https (http only where the policy allows it)
    MALFORMED = "malformed"  # no host, credentials in the URL, a bad port
    NUMERIC_HOST = "numeric_host"  # 2130706433, 0177.0.0.1, 0x7f.1, 127.1
    UNRESOLVABLE = "unresolvable"
    LOOPBACK = "loopback"
    PRIVATE = "private"
    LINK_LOCAL = "link_local"
    METADATA = "metadata"
    SHARED = "shared"
    MULTICAST = "multicast"
    UNSPECIFIED = "unspecified"
    RESERVED = "reserved"


class TargetRefused(Exception):
    """The URL may not be called. ``address``: the offending address, when there is one;
    ``resolved``: the refusal came from resolving a name (the answer of a DNS server, which an
    attacker may control), not from the URL's own text."""

    def __init__(
        self, refusal: Refusal, address: IPAddress | None = None, *, resolved: bool = False
    ) -> None:
        super().__init__(refusal.value if address is None else f"{refusal.value}: {address}")
        self.refusal = refusal
        self.address = address
        self.resolved = resolved


@dataclass(frozen=True, kw_only=True)
class TargetPolicy:
    """``allow_http``: http as well as https. ``allow_loopback``: loopback addresses pass (a
    developer's own receiver); every other refused range stays refused."""

    allow_http: bool = False
    allow_loopback: bool = False

    def refusal_of(self, address: IPAddress) -> Refusal | None:
        refusal = address_refusal(address)
        if refusal is Refusal.LOOPBACK and self.allow_loopback and _plain_loopback(address):
            return None
        return refusal


@dataclass(frozen=True, kw_only=True)
class Target:
    """A URL that passed, with every address its host resolved to (all checked)."""

    url: str
    scheme: str
    host: str  # without brackets, lower case
    port: int
    addresses: tuple[IPAddress, ...]

    @property
    def host_is_address(self) -> bool:
        return _literal(self.host) is not None

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    def pinned_url(self, address: IPAddress) -> str:
        """The URL with its host replaced by ``address``: a connection to exactly that address.
        Send ``host_header`` as Host and, for https to a name, the name as the TLS server name
        (httpx: ``extensions={"sni_hostname": host}``), so the certificate is checked for it."""
        parts = urlsplit(self.url)
        shown = f"[{address}]" if address.version == 6 else str(address)
        return urlunsplit(parts._replace(netloc=f"{shown}:{self.port}"))


def address_refusal(address: IPAddress) -> Refusal | None:
    """Why paytide must not connect to ``address``, or None for a public unicast address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            inner = address_refusal(embedded)
            # ::ffff:a.b.c.d is a.b.c.d; NAT64 translates to it: judge the IPv4 address.
            if inner is not None or address.ipv4_mapped is not None or address in _NAT64:
                return inner
    if address in _METADATA:
        return Refusal.METADATA
    if address.is_unspecified:
        return Refusal.UNSPECIFIED
    if address.is_loopback:
        return Refusal.LOOPBACK
    if address.is_link_local:
        return Refusal.LINK_LOCAL
    if address.is_multicast:
        return Refusal.MULTICAST
    if address in _SHARED:
        return Refusal.SHARED
    if any(address in network for network in _PRIVATE):
        return Refusal.PRIVATE
    if address.is_reserved or not address.is_global:
        return Refusal.RESERVED
    return None


async def system_resolver(host: str, port: int) -> Sequence[str]:
    """Every address the system resolver gives for ``host`` (getaddrinfo, on a lookup thread)."""
    lookup = functools.partial(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    infos = await asyncio.get_running_loop().run_in_executor(_LOOKUPS, lookup)
    return [str(info[4][0]) for info in infos]


async def check_url(url: str, policy: TargetPolicy, resolver: Resolver = system_resolver) -> Target:
    """The target ``url`` names, once every address of its host passed ``policy``. Raises
    TargetRefused."""
    parts = urlsplit(url)
    if parts.scheme not in ({"https", "http"} if policy.allow_http else {"https"}):
        raise TargetRefused(Refusal.SCHEME)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise TargetRefused(Refusal.MALFORMED) from None
    host = (parts.hostname or "").lower()
    if not host or parts.username is not None or parts.password is not None:
        raise TargetRefused(Refusal.MALFORMED)
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")  # the name DNS and the Host header see
        except UnicodeError:
            raise TargetRefused(Refusal.MALFORMED) from None
    literal = _literal(host)
    if literal is None and _NUMERIC_HOST.match(host):
        raise TargetRefused(Refusal.NUMERIC_HOST)
    addresses = (literal,) if literal is not None else await _resolve(resolver, host, port)
    for address in addresses:
        refusal = policy.refusal_of(address)
        if refusal is not None:
            raise TargetRefused(refusal, address, resolved=literal is None)
    return Target(url=url, scheme=parts.scheme, host=host, port=port, addresses=addresses)


async def _resolve(resolver: Resolver, host: str, port: int) -> tuple[IPAddress, ...]:
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
            answers = await resolver(host.rstrip("."), port)
    except (OSError, TimeoutError, UnicodeError):
        raise TargetRefused(Refusal.UNRESOLVABLE, resolved=True) from None
    found: list[IPAddress] = []
    for answer in answers:
        address = _literal(answer)
        if address is None:
            raise TargetRefused(Refusal.UNRESOLVABLE, resolved=True)
        if address not in found:
            found.append(address)
    if not found:
        raise TargetRefused(Refusal.UNRESOLVABLE, resolved=True)
    return tuple(found)


def _literal(host: str) -> IPAddress | None:
    """``host`` as an IP address (an IPv6 zone id dropped), or None when it is not one."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        server, client = address.teredo
        return client if address_refusal(client) is not None else server
    return None


def _plain_loopback(address: IPAddress) -> bool:
    """127.0.0.0/8, ::1 or ::ffff:127.x: a connection that stays on this machine."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback
