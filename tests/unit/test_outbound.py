"""The outbound target policy (paytide/outbound.py): which webhook URLs paytide may call, over a
table of hostile hosts and a few public ones. Names resolve through a fake resolver here only."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import threading
from collections.abc import Sequence

import pytest
from pydantic import ValidationError

from paytide import outbound
from paytide.outbound import Refusal, TargetPolicy, TargetRefused, check_url
from paytide.settings import Environment, Settings
from tests.support.production import production_settings

PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"
NAMES = {
    "hooks.shop.example": [PUBLIC_V4, PUBLIC_V6],
    "localhost": ["127.0.0.1", "::1"],
    "internal.shop.example": ["10.1.2.3"],
    "metadata.shop.example": ["169.254.169.254"],
    # One internal address among public ones is enough to refuse the name.
    "mixed.shop.example": [PUBLIC_V4, "192.168.0.10"],
    "mapped.shop.example": ["::ffff:127.0.0.1"],
}
ANY = TargetPolicy(allow_http=True)
DEVELOPER = TargetPolicy(allow_http=True, allow_loopback=True)


async def fake_resolver(host: str, port: int) -> Sequence[str]:
    if host in NAMES:
        return NAMES[host]
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


HOSTILE = [
    # Loopback, and loopback written so that a naive check misses it.
    ("https://127.0.0.1/hook", Refusal.LOOPBACK),
    ("https://127.8.9.10:8443/hook", Refusal.LOOPBACK),
    ("https://2130706433/hook", Refusal.NUMERIC_HOST),  # decimal
    ("https://0177.0.0.1/hook", Refusal.NUMERIC_HOST),  # octal
    ("https://0x7f000001/hook", Refusal.NUMERIC_HOST),  # hex
    ("https://0x7f.0.0.1/hook", Refusal.NUMERIC_HOST),
    ("https://127.1/hook", Refusal.NUMERIC_HOST),  # short form
    ("https://127.0.0.1./hook", Refusal.NUMERIC_HOST),  # trailing dot
    ("https://[::1]/hook", Refusal.LOOPBACK),
    ("https://[0:0:0:0:0:0:0:1]/hook", Refusal.LOOPBACK),
    ("https://[::ffff:127.0.0.1]/hook", Refusal.LOOPBACK),  # IPv4-mapped
    ("https://[::ffff:7f00:1]/hook", Refusal.LOOPBACK),
    ("https://[::127.0.0.1]/hook", Refusal.LOOPBACK),  # IPv4-compatible
    ("https://[2001:0:4136:e378:8000:63bf:80ff:fffe]/hook", Refusal.LOOPBACK),  # Teredo client
    ("https://localhost/hook", Refusal.LOOPBACK),
    ("https://LOCALHOST./hook", Refusal.LOOPBACK),
    ("https://mapped.shop.example/hook", Refusal.LOOPBACK),
    # Nowhere and everywhere.
    ("https://0.0.0.0/hook", Refusal.UNSPECIFIED),
    ("https://[::]/hook", Refusal.UNSPECIFIED),
    # Cloud metadata and link-local.
    ("http://169.254.169.254/latest/meta-data/", Refusal.METADATA),
    ("https://[fd00:ec2::254]/latest/meta-data/", Refusal.METADATA),
    ("https://[2002:a9fe:a9fe::1]/hook", Refusal.METADATA),  # 6to4 around 169.254.169.254
    ("https://metadata.shop.example/hook", Refusal.METADATA),
    ("https://169.254.10.20/hook", Refusal.LINK_LOCAL),
    ("https://[fe80::1]/hook", Refusal.LINK_LOCAL),
    ("https://[fe80::1%25eth0]/hook", Refusal.LINK_LOCAL),
    # Private and shared ranges.
    ("https://10.0.0.5/hook", Refusal.PRIVATE),
    ("https://172.16.0.1/hook", Refusal.PRIVATE),
    ("https://172.31.255.254/hook", Refusal.PRIVATE),
    ("https://192.168.1.1/hook", Refusal.PRIVATE),
    ("https://[fc00::1]/hook", Refusal.PRIVATE),
    ("https://[fd12:3456:789a::1]/hook", Refusal.PRIVATE),
    ("https://[::ffff:10.0.0.5]/hook", Refusal.PRIVATE),
    ("https://[64:ff9b::a00:5]/hook", Refusal.PRIVATE),  # NAT64 around 10.0.0.5
    ("https://internal.shop.example/hook", Refusal.PRIVATE),
    ("https://mixed.shop.example/hook", Refusal.PRIVATE),
    ("https://100.64.0.1/hook", Refusal.SHARED),
    ("https://100.127.255.254/hook", Refusal.SHARED),
    # Multicast and reserved.
    ("https://224.0.0.1/hook", Refusal.MULTICAST),
    ("https://[ff02::1]/hook", Refusal.MULTICAST),
    ("https://240.0.0.1/hook", Refusal.RESERVED),
    ("https://255.255.255.255/hook", Refusal.RESERVED),
    ("https://192.0.2.10/hook", Refusal.RESERVED),  # documentation range
    ("https://[2001:db8::1]/hook", Refusal.RESERVED),
    # Not a callable URL at all.
    ("https://nowhere.shop.example/hook", Refusal.UNRESOLVABLE),
    ("https://user:pw@hooks.shop.example/hook", Refusal.MALFORMED),
    ("ftp://hooks.shop.example/hook", Refusal.SCHEME),
]


@pytest.mark.parametrize(("url", "refusal"), HOSTILE)
async def test_hostile_targets_are_refused(url: str, refusal: Refusal) -> None:
    """Every internal or disguised target is refused, naming why."""
    with pytest.raises(TargetRefused) as refused:
        await check_url(url, ANY, fake_resolver)
    assert refused.value.refusal is refusal


@pytest.mark.parametrize(
    ("url", "addresses"),
    [
        ("https://hooks.shop.example/hook", (PUBLIC_V4, PUBLIC_V6)),
        ("https://hooks.shop.example.:8443/a?b=1", (PUBLIC_V4, PUBLIC_V6)),
        (f"https://{PUBLIC_V4}/hook", (PUBLIC_V4,)),
        (f"https://[{PUBLIC_V6}]/hook", (PUBLIC_V6,)),
        ("https://[::ffff:8.8.8.8]/hook", ("::ffff:8.8.8.8",)),
        ("https://[64:ff9b::808:808]/hook", ("64:ff9b::808:808",)),  # NAT64 around 8.8.8.8
        ("http://hooks.shop.example:8080/hook", (PUBLIC_V4, PUBLIC_V6)),
    ],
)
async def test_public_targets_pass_with_every_address(url: str, addresses: tuple[str, ...]) -> None:
    """A public URL passes, with every address its host resolved to."""
    target = await check_url(url, ANY, fake_resolver)
    assert target.addresses == tuple(ipaddress.ip_address(a) for a in addresses)


async def test_the_pinned_url_goes_to_the_checked_address_and_keeps_the_name() -> None:
    """The request URL carries the checked address; the Host header keeps the name and port."""
    target = await check_url("https://hooks.shop.example:8443/a/b?c=1#f", ANY, fake_resolver)
    v4, v6 = target.addresses
    assert target.pinned_url(v4) == f"https://{PUBLIC_V4}:8443/a/b?c=1#f"
    assert target.pinned_url(v6) == f"https://[{PUBLIC_V6}]:8443/a/b?c=1#f"
    assert target.host_header == "hooks.shop.example:8443"
    assert not target.host_is_address
    default_port = await check_url("https://hooks.shop.example/x", ANY, fake_resolver)
    assert default_port.host_header == "hooks.shop.example"


async def test_http_only_where_the_policy_allows_it() -> None:
    """http is refused unless the policy allows it (development); https always passes."""
    with pytest.raises(TargetRefused) as refused:
        await check_url("http://hooks.shop.example/hook", TargetPolicy(), fake_resolver)
    assert refused.value.refusal is Refusal.SCHEME
    await check_url("https://hooks.shop.example/hook", TargetPolicy(), fake_resolver)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8123/hook",
        "http://[::1]:8123/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://localhost:8123/hook",
    ],
)
async def test_the_developer_setting_lets_loopback_through(url: str) -> None:
    """With loopback allowed, a receiver on this machine passes."""
    await check_url(url, DEVELOPER, fake_resolver)


@pytest.mark.parametrize(
    ("url", "refusal"),
    [
        ("http://10.0.0.5/hook", Refusal.PRIVATE),
        ("http://192.168.1.1/hook", Refusal.PRIVATE),
        ("http://100.64.0.1/hook", Refusal.SHARED),
        ("http://169.254.169.254/latest/meta-data/", Refusal.METADATA),
        ("http://[fe80::1]/hook", Refusal.LINK_LOCAL),
        ("http://0.0.0.0:8123/hook", Refusal.UNSPECIFIED),
        ("http://[::127.0.0.1]/hook", Refusal.LOOPBACK),  # tunnelled, not this machine
        ("http://2130706433/hook", Refusal.NUMERIC_HOST),
        ("http://internal.shop.example/hook", Refusal.PRIVATE),
    ],
)
async def test_the_developer_setting_lets_nothing_else_through(url: str, refusal: Refusal) -> None:
    """With loopback allowed, every other internal range stays refused."""
    with pytest.raises(TargetRefused) as refused:
        await check_url(url, DEVELOPER, fake_resolver)
    assert refused.value.refusal is refusal


async def test_a_hanging_resolver_counts_as_unresolvable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A DNS answer that never comes is a refusal after the timeout, not a hang."""

    async def hanging(host: str, port: int) -> Sequence[str]:
        await asyncio.sleep(60)
        return []

    monkeypatch.setattr(outbound, "RESOLVE_TIMEOUT_SECONDS", 0.05)
    with pytest.raises(TargetRefused) as refused:
        await check_url("https://slow.shop.example/hook", ANY, hanging)
    assert refused.value.refusal is Refusal.UNRESOLVABLE


async def test_lookups_that_never_return_leave_the_default_executor_free(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """getaddrinfo for names whose DNS never answers (a merchant's own) holds a thread past the
    timeout; those threads are not the event loop's default executor, which the ledger writes of
    the API and worker use, so those still run."""
    unanswered = threading.Event()

    def never_answers(*_args: object, **_kwargs: object) -> list[object]:
        unanswered.wait(30)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", never_answers)
    monkeypatch.setattr(outbound, "RESOLVE_TIMEOUT_SECONDS", 0.2)
    # More hung lookups than the default executor has threads (min(32, CPUs + 4)).
    names = [f"hook{n}.slow.shop.example" for n in range(min(32, (os.cpu_count() or 1) + 4) + 2)]
    try:
        results = await asyncio.gather(
            *(check_url(f"https://{name}/hook", ANY) for name in names), return_exceptions=True
        )
        assert all(
            isinstance(r, TargetRefused) and r.refusal is Refusal.UNRESOLVABLE for r in results
        )
        assert await asyncio.wait_for(asyncio.to_thread(lambda: "written"), 2) == "written"
    finally:
        unanswered.set()


def test_production_refuses_the_loopback_setting() -> None:
    """PAYTIDE_WEBHOOK_ALLOW_LOOPBACK=true stops a production start-up, naming the variable."""
    with pytest.raises(ValidationError, match="PAYTIDE_WEBHOOK_ALLOW_LOOPBACK"):
        production_settings(webhook_allow_loopback=True)
    policy = production_settings().webhook_target_policy
    assert (policy.allow_http, policy.allow_loopback) == (False, False)


def test_development_allows_http_and_loopback_only_when_asked() -> None:
    """Development accepts http; loopback only with the explicit setting (off by default)."""
    assert Settings().webhook_target_policy == TargetPolicy(allow_http=True)
    allowed = Settings(environment=Environment.DEVELOPMENT, webhook_allow_loopback=True)
    assert allowed.webhook_target_policy == DEVELOPER
