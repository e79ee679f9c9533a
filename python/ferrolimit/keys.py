"""Who is asking: the client address behind trusted proxies, grouped into a limit key.

Rules (see DESIGN.md): the ASGI peer address is the client unless the peer is a trusted proxy. Only then
are ``X-Forwarded-For`` (or RFC 7239 ``Forwarded``) entries read, walking from the right, past the trusted
hops, to the first address a trusted proxy vouched for. IPv6 clients are keyed by their /64 by default,
since one host usually holds a whole /64. A request with no resolvable client is keyed by ``NO_CLIENT``
and logged, never silently pooled under some other client's key.

``ClientIdentifier`` is shared by the HTTP middleware, the FastAPI dependency and the FastMCP middleware.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import TypeAlias

from ferrolimit._core import AddressSet, ClientResolver

__all__ = ["NO_CLIENT", "ClientIdentifier", "IPSet", "matched_route", "mount_path", "route_name"]

logger = logging.getLogger("ferrolimit")

NO_CLIENT = "<no-client>"
"""The key of requests whose client address cannot be resolved (no peer, or a trusted proxy sent garbage)."""

Headers: TypeAlias = Sequence[tuple[bytes, bytes]] | Mapping[str, str]
_Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

# A header can hold thousands of hops; nobody runs more proxies than this in front of an app.
_MAX_HOPS = 32
_HEADER_NAMES = {"x-forwarded-for": b"x-forwarded-for", "forwarded": b"forwarded"}


def _parse_address_uncached(text: str) -> _Address | None:
    """An address from a peer string or a proxy header entry (``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``,
    ``"[::1]"``, ``fe80::1%eth0``), IPv4-mapped IPv6 folded to IPv4; None when it is not an address."""
    text = text.strip().strip('"').strip()
    if not text or len(text) > 64:
        return None
    if text[0] == "[":
        end = text.find("]")
        if end < 0:
            return None
        text = text[1:end]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    text = text.split("%", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


_parse_address = lru_cache(maxsize=8192)(_parse_address_uncached)


def _network(item: str) -> _Network:
    """The network (or single address) ``item`` names; one written IPv4-mapped (``::ffff:10.0.0.1``, as a
    dual-stack server logs its IPv4 peers) as the IPv4 network it stands for, since addresses are matched so."""
    try:
        network = ipaddress.ip_network(item.strip(), strict=False)
    except ValueError:
        raise ValueError(
            f"{item!r} is not an IP address or network; expected e.g. '10.0.0.1', '10.0.0.0/8' or '2001:db8::/32'"
        ) from None
    mapped = network.network_address.ipv4_mapped if isinstance(network, ipaddress.IPv6Network) else None
    if mapped is not None and network.prefixlen >= 96:
        return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


class IPSet:
    """A set of addresses and networks (``"127.0.0.1"``, ``"10.0.0.0/8"``, ``"2001:db8::/32"``).

    ``address in ip_set`` takes an address string and is False for anything that is not an address. IPv6 is
    matched in any spelling, and an IPv4-mapped IPv6 address (``::ffff:10.0.0.1``, as a server listening on
    ``::`` reports IPv4 peers) as the IPv4 address it carries.
    """

    __slots__ = ("_exact", "_networks")

    def __init__(self, items: Iterable[str] = ()) -> None:
        if isinstance(items, str):
            items = [items]
        networks = [_network(item) for item in items]
        self._exact = frozenset(str(net.network_address) for net in networks if net.num_addresses == 1)
        self._networks = tuple(net for net in networks if net.num_addresses > 1)

    def __bool__(self) -> bool:
        return bool(self._exact or self._networks)

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, str):
            return False
        if address in self._exact:
            return True
        if not self._networks and ":" not in address:
            return False  # an IPv4 address in its usual text: only single addresses to match, by that text
        parsed = _parse_address(address)  # IPv6 in any spelling, IPv4-mapped IPv6 (a dual-stack server's peers)
        if parsed is None:
            return False
        if str(parsed) in self._exact:
            return True
        return any(parsed.version == net.version and parsed in net for net in self._networks)

    def __repr__(self) -> str:
        return f"IPSet({sorted(self._exact) + [str(net) for net in self._networks]!r})"

    def native(self) -> AddressSet:
        """The same set, matched natively (where the ASGI layers check a client per request)."""
        return AddressSet(sorted(self._exact), [(str(net.network_address), net.prefixlen) for net in self._networks])

    def networks(self) -> list[tuple[str, int]]:
        """Every address and network as ``(network address, prefix length)``."""
        exact = [(address, 32 if ":" not in address else 128) for address in sorted(self._exact)]
        return exact + [(str(net.network_address), net.prefixlen) for net in self._networks]


def _header_values(headers: Headers, name: str) -> list[str]:
    """Every value of header ``name`` in order, from raw ASGI pairs or a (case-insensitive or lower-cased) mapping."""
    if isinstance(headers, Mapping):
        getlist = getattr(headers, "getlist", None)
        if getlist is not None:  # starlette.datastructures.Headers keeps repeated fields
            return [str(value) for value in getlist(name)]
        value = headers.get(name)
        if value is None:
            value = next((v for k, v in headers.items() if isinstance(k, str) and k.lower() == name), None)
        return [] if value is None else [str(value)]
    raw_name = _HEADER_NAMES[name]
    return [value.decode("latin-1") for key, value in headers if key == raw_name or key.lower() == raw_name]


def _forwarded_for(values: list[str]) -> list[str]:
    """The ``for=`` node of each RFC 7239 element, left to right; an element without one gives ``""``."""
    nodes: list[str] = []
    for value in values:
        for element in value.split(","):
            node = ""
            for pair in element.split(";"):
                name, _, content = pair.partition("=")
                if name.strip().lower() == "for":
                    node = content
                    break
            nodes.append(node)
    return nodes


class ClientIdentifier:
    """Resolves the client address of a request and the key it is limited under.

    ``trusted_proxies`` is either a hop count or the addresses/networks of your proxies:

    - ``0`` (default): the peer address is the client; forwarding headers are ignored, as anyone can send them.
    - ``n > 0``: ``n`` proxies stand in front of the app, each appending the address it saw to the header; the
      client is the ``n``-th entry from the right. Only right if every request passes through all ``n``.
    - ``["10.0.0.0/8", "192.0.2.7"]``: headers are read only when the peer is in the list, and the client is
      the first address from the right that is not in it.

    ``proxy_header`` is ``"x-forwarded-for"`` (default) or ``"forwarded"`` (RFC 7239); use the one your
    proxy sets, since a client can send the other one through it untouched. IPv6 clients are keyed by
    their ``/ipv6_prefix`` network (64 by default; 128 keys each address alone).
    """

    __slots__ = ("_hops", "_ipv6_prefix", "_proxy_header", "_trusted", "_warned", "native")

    def __init__(
        self,
        trusted_proxies: int | Sequence[str] = 0,
        ipv6_prefix: int = 64,
        *,
        proxy_header: str = "x-forwarded-for",
    ) -> None:
        if isinstance(trusted_proxies, bool) or not isinstance(trusted_proxies, int | Sequence):
            raise TypeError(
                f"trusted_proxies must be a hop count or a list of addresses/networks, got {trusted_proxies!r}"
            )
        if isinstance(trusted_proxies, int):
            if not 0 <= trusted_proxies <= _MAX_HOPS:
                raise ValueError(f"trusted_proxies must be a hop count from 0 to {_MAX_HOPS}, got {trusted_proxies}")
            self._hops = trusted_proxies
            self._trusted: IPSet | None = None
        else:
            self._hops = 0
            self._trusted = IPSet(trusted_proxies)
        if isinstance(ipv6_prefix, bool) or not isinstance(ipv6_prefix, int) or not 1 <= ipv6_prefix <= 128:
            raise ValueError(f"ipv6_prefix must be a prefix length from 1 to 128, e.g. 64; got {ipv6_prefix!r}")
        self._ipv6_prefix = ipv6_prefix
        header = proxy_header.strip().lower()
        if header not in _HEADER_NAMES:
            raise ValueError(f"proxy_header must be 'x-forwarded-for' or 'forwarded', got {proxy_header!r}")
        self._proxy_header = header
        self._warned = False
        # The same rules, run natively where the ASGI layers resolve a client per request.
        self.native = ClientResolver(
            self._hops, None if self._trusted is None else self._trusted.networks(), ipv6_prefix, header
        )

    @property
    def reads_headers(self) -> bool:
        """Whether any forwarding header can ever be read (a proxy is configured)."""
        return self._hops > 0 or bool(self._trusted)

    def client_ip(self, peer: str | None, headers: Headers) -> str | None:
        """The client's address (IPv6 in full, IPv4-mapped folded to IPv4), or None if it cannot be known.

        ``peer`` is the ASGI ``scope["client"][0]``; a peer that is not an IP (a test client's name) is
        returned as it is, since it comes from the server, not the client.
        """
        if not peer:
            return None
        if self._hops == 0 and not self._trusted:
            return peer if ":" not in peer else self._canonical(peer)
        if self._trusted is not None and peer not in self._trusted:
            return peer if ":" not in peer else self._canonical(peer)
        return self._from_header(peer, headers)

    def client_key(self, peer: str | None, headers: Headers) -> str:
        """The key a client is limited under: its address, IPv6 grouped by prefix, or ``NO_CLIENT``."""
        if peer and ":" not in peer and not self._hops and not self._trusted:
            return peer  # the common case: an IPv4 peer and no proxy
        address = self.client_ip(peer, headers)
        if address is None:
            self._warn_no_client(peer)
            return NO_CLIENT
        return self.key_of(address)

    def resolve(self, peer: str | None, headers: Headers) -> tuple[str | None, str]:
        """``(client_ip(peer, headers), client_key(peer, headers))`` in one pass."""
        if peer and ":" not in peer and not self._hops and not self._trusted:
            return peer, peer
        address = self.client_ip(peer, headers)
        if address is None:
            self._warn_no_client(peer)
            return None, NO_CLIENT
        return address, self.key_of(address)

    def key_of(self, address: str) -> str:
        """The key of a resolved address: IPv6 grouped into its ``/ipv6_prefix`` network."""
        if ":" not in address:
            return address
        return _group_ipv6(address, self._ipv6_prefix)

    @staticmethod
    def _canonical(text: str) -> str:
        parsed = _parse_address(text)
        return text if parsed is None else str(parsed)

    def _from_header(self, peer: str, headers: Headers) -> str | None:
        values = _header_values(headers, self._proxy_header)
        if self._proxy_header == "forwarded":
            entries = _forwarded_for(values)[-_MAX_HOPS:]
        else:
            joined = ",".join(values)
            entries = joined.rsplit(",", _MAX_HOPS)[-_MAX_HOPS:] if joined.strip() else []
        chain = [*entries, peer]
        if self._trusted is None:
            # chain[-1] is the nearest proxy; with n proxies chain[-(n + 1)] is who connected to the outermost.
            index = max(len(chain) - 1 - self._hops, 0)
            if index == len(chain) - 1:
                return peer if ":" not in peer else self._canonical(peer)
            parsed = _parse_address(chain[index])
            return None if parsed is None else str(parsed)
        for entry in reversed(chain):
            parsed = _parse_address(entry)
            if parsed is None:
                return None  # a trusted proxy vouched for something that is not an address
            address = str(parsed)
            if address not in self._trusted:
                return address
        return address  # every hop is a trusted proxy: the outermost one is the client

    def _warn_no_client(self, peer: str | None) -> None:
        if not self._warned:
            self._warned = True
            logger.warning(
                "ferrolimit: a request has no resolvable client address (peer %r); such requests share the "
                "key %r. Check that the server passes the client address and that trusted_proxies is right.",
                peer,
                NO_CLIENT,
            )
        else:
            logger.debug("ferrolimit: request without a resolvable client address (peer %r)", peer)


def _group_ipv6_uncached(address: str, prefix: int) -> str:
    parsed = _parse_address(address)
    if parsed is None or parsed.version == 4 or prefix >= 128:
        return address if parsed is None else str(parsed)
    network = ipaddress.IPv6Network((int(parsed) >> (128 - prefix) << (128 - prefix), prefix))
    return str(network)


_group_ipv6 = lru_cache(maxsize=8192)(_group_ipv6_uncached)


def matched_route(scope: Mapping[str, object]) -> object | None:
    """The route that matched, as the app sees it: with FastAPI's included routers, the effective route (its
    full path template and every router's dependencies) rather than the route as declared; None before routing."""
    route = scope.get("route")
    fastapi_scope = scope.get("fastapi")
    if isinstance(fastapi_scope, dict):
        effective: object = fastapi_scope.get("effective_route_context")
        if effective is not None and getattr(effective, "original_route", None) is route:
            return effective
    return route


def mount_path(scope: Mapping[str, object]) -> str:
    """The path of the ``Mount``s the request went through (``/v1`` inside an app mounted at ``/v1``), without
    the server's root path (``uvicorn --root-path``); empty outside any mount."""
    app_root = scope.get("app_root_path")
    if not isinstance(app_root, str):
        return ""  # set by Starlette's Mount alone
    root = scope.get("root_path")
    if not isinstance(root, str) or not root.startswith(app_root):
        return ""
    return root[len(app_root) :]


def route_name(scope: Mapping[str, object]) -> str | None:
    """The template of the route that matched, after the path of the mounts it is under (``/users/{id}``, or
    ``/v1/users/{id}`` in an app mounted at ``/v1``), never the concrete path; None before routing."""
    route = matched_route(scope)
    if route is None:
        return None
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return mount_path(scope) + template if isinstance(template, str) else None
