"""Client addresses and keys: trusted proxies, spoofing, IPv6 grouping, the no-client sentinel."""

from __future__ import annotations

import logging
import random

import pytest

from ferrolimit._core import AddressSet
from ferrolimit.keys import NO_CLIENT, ClientIdentifier, IPSet, mount_path, route_name


def raw(**headers: str) -> list[tuple[bytes, bytes]]:
    return [(name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()]


def test_no_proxy_ignores_forwarding_headers() -> None:
    ident = ClientIdentifier()
    spoofed = raw(x_forwarded_for="1.1.1.1", forwarded="for=2.2.2.2")
    assert ident.client_ip("203.0.113.9", spoofed) == "203.0.113.9"
    assert ident.client_key("203.0.113.9", spoofed) == "203.0.113.9"


@pytest.mark.parametrize(
    ("hops", "xff", "expected"),
    [
        (1, "198.51.100.7", "198.51.100.7"),
        (1, "6.6.6.6, 198.51.100.7", "198.51.100.7"),  # the client's own entry sits left of the proxy's
        (2, "6.6.6.6, 198.51.100.7, 10.0.0.2", "198.51.100.7"),
        (2, "198.51.100.7", "198.51.100.7"),  # fewer entries than hops: the outermost known hop
        (1, "", "10.0.0.1"),  # a proxy that set nothing: the peer
        (1, "not-an-ip", None),
        (1, "198.51.100.7:4711", "198.51.100.7"),
        (1, "[2001:db8::1]:4711", "2001:db8::1"),
        (1, "::ffff:198.51.100.7", "198.51.100.7"),
    ],
)
def test_hop_count_takes_the_nth_entry_from_the_right(hops: int, xff: str, expected: str | None) -> None:
    ident = ClientIdentifier(trusted_proxies=hops)
    assert ident.client_ip("10.0.0.1", raw(x_forwarded_for=xff) if xff else []) == expected


def test_repeated_header_lines_are_one_list() -> None:
    ident = ClientIdentifier(trusted_proxies=1)
    headers = [(b"x-forwarded-for", b"6.6.6.6"), (b"x-forwarded-for", b"198.51.100.7")]
    assert ident.client_ip("10.0.0.1", headers) == "198.51.100.7"


def test_cidr_list_reads_headers_only_from_trusted_peers_and_skips_trusted_hops() -> None:
    ident = ClientIdentifier(trusted_proxies=["10.0.0.0/8", "192.0.2.1"])
    headers = raw(x_forwarded_for="6.6.6.6, 198.51.100.7, 10.1.2.3")
    assert ident.client_ip("10.0.0.1", headers) == "198.51.100.7"
    assert ident.client_ip("192.0.2.1", headers) == "198.51.100.7"
    assert ident.client_ip("203.0.113.5", headers) == "203.0.113.5", "an untrusted peer's header is ignored"
    assert ident.client_ip("10.0.0.1", raw(x_forwarded_for="10.9.9.9, 10.1.1.1")) == "10.9.9.9"
    assert ident.client_ip("10.0.0.1", raw(x_forwarded_for="garbage, 10.1.1.1")) is None
    assert ident.client_ip("10.0.0.1", raw(x_forwarded_for="198.51.100.7, garbage")) is None


def test_rfc7239_forwarded() -> None:
    ident = ClientIdentifier(trusted_proxies=["10.0.0.0/8"], proxy_header="Forwarded")
    headers = raw(forwarded='for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https, for=10.0.0.3;by=10.0.0.9')
    assert ident.client_ip("10.0.0.1", headers) == "2001:db8:cafe::17"
    assert ident.client_key("10.0.0.1", headers) == "2001:db8:cafe::/64"
    # X-Forwarded-For is not consulted when the proxy speaks Forwarded.
    assert ident.client_ip("10.0.0.1", raw(x_forwarded_for="198.51.100.7")) == "10.0.0.1"
    assert ident.client_ip("10.0.0.1", raw(forwarded="for=unknown")) is None
    assert ident.client_ip("10.0.0.1", raw(forwarded="proto=https")) is None


def test_mappings_work_like_raw_headers() -> None:
    from starlette.datastructures import Headers

    ident = ClientIdentifier(trusted_proxies=1)
    assert ident.client_ip("10.0.0.1", {"x-forwarded-for": "6.6.6.6, 198.51.100.7"}) == "198.51.100.7"
    assert ident.client_ip("10.0.0.1", {"X-Forwarded-For": "198.51.100.8"}) == "198.51.100.8"
    starlette_headers = Headers(raw=[(b"x-forwarded-for", b"6.6.6.6"), (b"x-forwarded-for", b"198.51.100.9")])
    assert ident.client_ip("10.0.0.1", starlette_headers) == "198.51.100.9"


def test_ipv6_is_keyed_by_prefix() -> None:
    ident = ClientIdentifier()
    assert ident.client_key("2001:db8:1:2:aaaa::1", []) == "2001:db8:1:2::/64"
    assert ident.client_key("2001:db8:1:2:ffff::9", []) == "2001:db8:1:2::/64"
    assert ident.client_key("2001:db8:1:3::1", []) == "2001:db8:1:3::/64"
    assert ident.client_ip("2001:DB8:1:2:AAAA:0:0:1", []) == "2001:db8:1:2:aaaa::1"
    assert ident.client_key("::ffff:198.51.100.7", []) == "198.51.100.7"
    assert ClientIdentifier(ipv6_prefix=48).client_key("2001:db8:1:2::1", []) == "2001:db8:1::/48"
    assert ClientIdentifier(ipv6_prefix=128).client_key("2001:db8::1", []) == "2001:db8::1"


def test_no_client_is_a_sentinel_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    ident = ClientIdentifier(trusted_proxies=1)
    with caplog.at_level(logging.WARNING, logger="ferrolimit"):
        assert ident.client_key(None, []) == NO_CLIENT
        assert ident.client_key("10.0.0.1", raw(x_forwarded_for="nonsense")) == NO_CLIENT
    assert ident.client_ip(None, []) is None
    assert len([r for r in caplog.records if "no resolvable client" in r.message]) == 1, "warned once, not per request"


def test_a_named_peer_is_kept() -> None:
    assert ClientIdentifier().client_key("testclient", []) == "testclient"
    assert ClientIdentifier(trusted_proxies=1).client_key("testclient", []) == "testclient"


def test_huge_and_hostile_headers_neither_crash_nor_take_long() -> None:
    ident = ClientIdentifier(trusted_proxies=["10.0.0.0/8"])
    hostile = [(b"x-forwarded-for", b"198.51.100.7," + b"10.0.0.1," * 20_000 + b"10.0.0.1")]
    assert ident.client_ip("10.0.0.2", hostile) == "10.0.0.1", "the walk stops after 32 trusted hops"
    for value in [b"\xff\xfe", b"[", b"[::1", b'"', b"1.2.3.4:5:6", b"%", b",,,", b"x" * 10_000]:
        assert ident.client_ip("10.0.0.2", [(b"x-forwarded-for", value)]) is None
    # The native resolver the ASGI layers use: the same answers, from the same bytes decoded as latin-1.
    assert ident.native.resolve("10.0.0.2", [hostile[0][1].decode("latin-1")]) == ("10.0.0.1", "10.0.0.1")
    for value in [b"\xff\xfe", b"[", b"[::1", b'"', b"1.2.3.4:5:6", b"%", b",,,", b"x" * 10_000, b"\x00" * 100]:
        assert ident.native.resolve("10.0.0.2", [value.decode("latin-1")]) is None


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="'not-a-net' is not an IP address or network"):
        ClientIdentifier(trusted_proxies=["not-a-net"])
    with pytest.raises(ValueError, match="hop count"):
        ClientIdentifier(trusted_proxies=-1)
    with pytest.raises(TypeError):
        ClientIdentifier(trusted_proxies=True)
    with pytest.raises(ValueError, match="ipv6_prefix"):
        ClientIdentifier(ipv6_prefix=0)
    with pytest.raises(ValueError, match="proxy_header"):
        ClientIdentifier(proxy_header="x-real-ip")


def test_ipset_matches_addresses_and_networks() -> None:
    exempt = IPSet(["127.0.0.1", "10.0.0.0/8", "2001:db8::/32"])
    assert "127.0.0.1" in exempt and "10.200.0.1" in exempt and "2001:db8:ffff::1" in exempt
    assert "11.0.0.1" not in exempt and "2001:db9::1" not in exempt and "testclient" not in exempt
    assert "::ffff:10.0.0.1" in exempt
    assert not IPSet() and bool(exempt)


def test_the_native_address_set_agrees_with_ipset() -> None:
    """The ASGI layers check exemptions natively on their common path; ``IPSet`` is the reference, down to its
    quirk: with single addresses only, IPv4 text matches by its text alone."""
    sets = [
        IPSet(["127.0.0.1", "10.0.0.0/8", "2001:db8::/32"]),
        IPSet(["10.0.0.1", "::1"]),  # single addresses only
        IPSet(["10.0.0.1", "2001:db8::5", "192.0.2.0/24"]),
        IPSet(["0.0.0.0/0"]),
        IPSet(["::/0", "203.0.113.5/32"]),
        IPSet(["2001:db8:1::/48", "fe80::/10"]),
    ]
    candidates = [*_TOKENS, "10.0.0.1", "::ffff:10.0.0.1", "10.200.0.9", "2001:db8::5", "2001:0db8::5", "::1"]
    candidates += ["2001:db8:1:ffff::9", "fe80::2%lo", "192.0.2.200", " 10.0.0.1", "testclient", "0.0.0.0"]
    for ip_set in sets:
        native = ip_set.native()
        for candidate in candidates:
            assert (candidate in native) == (candidate in ip_set), (ip_set, candidate)
        assert 7 not in native and None not in native
    with pytest.raises(ValueError, match="not an IP address"):
        AddressSet(["10.0.0.300"], [])
    with pytest.raises(ValueError, match="not a network"):
        AddressSet([], [("10.0.0.0", 33)])


def test_an_ipv4_mapped_peer_is_the_ipv4_address_it_carries() -> None:
    """A server listening on "::" reports IPv4 peers as ::ffff:a.b.c.d; a set of single addresses must see them."""
    single = IPSet(["10.0.0.1", "2001:db8::5"])
    for ip_set in (single, single.native()):
        assert "::ffff:10.0.0.1" in ip_set and "::FFFF:10.0.0.1" in ip_set and "2001:0db8:0:0::5" in ip_set
        assert "::ffff:10.0.0.2" not in ip_set and "10.0.0.2" not in ip_set
    # Written as the server logs such peers: the same addresses.
    for written in (IPSet(["::ffff:10.0.0.1"]), IPSet(["::ffff:10.0.0.0/120"])):
        for ip_set in (written, written.native()):
            assert "::ffff:10.0.0.1" in ip_set and "10.0.0.1" in ip_set, written
            assert "10.0.1.1" not in ip_set and "2001:db8::1" not in ip_set, written
    assert ClientIdentifier(["::ffff:10.0.0.1"]).client_ip("10.0.0.1", {"x-forwarded-for": "198.51.100.7"}) == (
        "198.51.100.7"
    )


def test_route_name_is_the_template() -> None:
    class Route:
        path_format = "/users/{id}"
        path = "/users/{id:int}"

    assert route_name({"route": Route(), "path": "/users/7"}) == "/users/{id}"
    assert route_name({"path": "/users/7"}) is None
    # Under Mounts at /v1 then /admin, behind `--root-path /api`: the mounts' path, not the root path.
    mounted = {"route": Route(), "root_path": "/api/v1/admin", "app_root_path": "/api"}
    assert mount_path(mounted) == "/v1/admin"
    assert route_name(mounted) == "/v1/admin/users/{id}"
    assert mount_path({"root_path": "/api"}) == "", "no Mount: the root path alone"
    assert mount_path({"root_path": "/other", "app_root_path": "/api"}) == "", "a root path an app replaced"


_TOKENS = [
    "203.0.113.9",
    "10.0.0.1",
    "10.1.2.3:8080",
    "192.0.2.7",
    '"192.0.2.7"',
    " 198.51.100.2 ",
    "\x1c198.51.100.3",
    "2001:db8::1",
    "2001:DB8:0:0:1:0:0:1",
    "[2001:db8:1:2::abcd]:443",
    '"[2001:db8::2]"',
    "fe80::1%eth0",
    "::ffff:10.0.0.9",
    "::1",
    "::",
    "1:0:0:2:0:0:3:4",
    "010.0.0.1",
    "256.1.1.1",
    "unknown",
    "",
    "_hidden",
    "[::1",
    "1.2.3.4.5",
    "x" * 70,
    "caf\xe9",
]


def _forwarded_element(rng: random.Random) -> str:
    parts = [f"{rng.choice(['for', 'For', 'FOR', ' for'])}={rng.choice(_TOKENS)}"]
    if rng.random() < 0.3:
        parts.insert(0, "proto=https")
    if rng.random() < 0.2:
        parts = ["by=10.0.0.1"]
    return ";".join(parts)


def test_the_native_resolver_agrees_with_the_reference_on_generated_requests() -> None:
    """The ASGI layers resolve clients natively on their common path; ``ClientIdentifier`` is the reference.
    Every configuration, peer and header here must come out the same from both."""
    rng = random.Random(7239)
    configs = [
        ClientIdentifier(),
        ClientIdentifier(ipv6_prefix=48),
        ClientIdentifier(ipv6_prefix=128),
        ClientIdentifier(trusted_proxies=1),
        ClientIdentifier(trusted_proxies=2),
        ClientIdentifier(trusted_proxies=3, ipv6_prefix=56),
        ClientIdentifier(trusted_proxies=["10.0.0.0/8", "2001:db8::/32", "192.0.2.7", "::1"]),
        ClientIdentifier(trusted_proxies=["10.0.0.0/8"], proxy_header="forwarded"),
        ClientIdentifier(trusted_proxies=2, proxy_header="forwarded"),
        ClientIdentifier(trusted_proxies=[]),
    ]
    peers = ["10.0.0.1", "10.200.0.9", "192.0.2.7", "203.0.113.5", "::1", "2001:db8::5", "::ffff:10.0.0.2"]
    peers += ["testclient", "", "fe80::2%lo", "2001:db8:1::1", "not:an:address"]
    checked = 0
    for identifier in configs:
        for _ in range(600):
            peer = rng.choice(peers)
            lines = rng.randint(0, 3)
            if identifier._proxy_header == "forwarded":
                values = [", ".join(_forwarded_element(rng) for _ in range(rng.randint(1, 4))) for _ in range(lines)]
            else:
                values = [",".join(rng.choice(_TOKENS) for _ in range(rng.randint(0, 40))) for _ in range(lines)]
            name = identifier._proxy_header.encode()
            headers = [(name, value.encode("latin-1")) for value in values]
            expected = identifier.resolve(peer or None, headers)
            native = identifier.native.resolve(peer or None, values)
            assert (native or (None, NO_CLIENT)) == expected, (identifier, peer, values)
            checked += 1
    # Headers longer than the hops read: only the last 32 entries count, whoever is further left.
    trusted = ["10.0.0.0/8"]
    for identifier, entry in [
        (ClientIdentifier(trusted_proxies=trusted), "10.0.{}.1"),
        (ClientIdentifier(trusted_proxies=trusted, proxy_header="forwarded"), "for=10.0.{}.1"),
        (ClientIdentifier(trusted_proxies=32), "10.0.{}.1"),
    ]:
        for length in (31, 32, 33, 40):
            outer = entry.replace("10.0.{}.1", "203.0.113.1")  # the client, left of every proxy
            values = [", ".join([outer] + [entry.format(i) for i in range(length)])]
            headers = [(identifier._proxy_header.encode(), values[0].encode())]
            expected = identifier.resolve("10.9.9.9", headers)
            assert expected[0] is not None
            assert identifier.native.resolve("10.9.9.9", values) == expected, (identifier, length)
            checked += 1
    assert checked == 6012
