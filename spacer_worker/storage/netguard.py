"""Which hosts a url location from a broker message may reach.

A URL in a message is an attacker's choice: left alone it reaches cloud
metadata (169.254.169.254), Redis, Flower or anything else on the worker's
network. The guard resolves the host itself, refuses every address that is
not public (loopback, private, link-local, shared, multicast, reserved,
unspecified, and IPv6 forms that embed such an IPv4 address) unless the
operator allowed it in URL_ALLOWED_HOSTS, and refuses cloud metadata
addresses always. The connection then goes to the address that was checked,
so a DNS answer that changes between check and connect (rebinding) cannot
swap it. Every connection is checked, so every redirect is too.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from spacer_worker.exceptions import ConfigError, URLDownloadError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Instance metadata services (AWS, GCP, Azure, OpenStack; AWS IPv6; Alibaba
#: Cloud; Oracle Cloud): refused even when a network holding them is allowed.
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    '169.254.169.254', 'fd00:ec2::254', '100.100.100.200', '192.0.0.192',
    '169.254.170.2'))


class HostNotAllowedError(URLDownloadError):
    """A URL's host resolves to an address the guard refuses.

    Raised inside the URL layer; a broker message sees it as the plain
    URLDownloadError every other unusable URL gives.
    """


def _is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address.teredo is not None:
            embedded = address.teredo[1]
        if embedded is not None and not _is_public(embedded):
            return False
    return (address.is_global and not address.is_multicast
            and not address.is_reserved and not address.is_loopback
            and not address.is_link_local and not address.is_unspecified
            and not address.is_private)


@dataclass(frozen=True)
class HostGuard:
    """The URL_ALLOWED_HOSTS exceptions: names and networks that may be
    private. Public addresses need no entry."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = field(default=())

    @classmethod
    def parse(cls, text: str, setting: str = 'URL_ALLOWED_HOSTS') -> HostGuard:
        hosts, networks = set(), []
        for entry in (e.strip() for e in (text or '').split(',')):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            name = entry.lower().rstrip('.')
            if not name or '/' in name or ':' in name or ' ' in name:
                raise ConfigError(
                    f"{setting}: {entry!r} is neither a host name nor a "
                    f"network such as 10.0.0.0/8.")
            hosts.add(name)
        return cls(frozenset(hosts), tuple(networks))

    def permits(self, host: str, address: IPAddress) -> bool:
        """Whether a connection for ``host`` may go to ``address``."""
        if address in METADATA_ADDRESSES:
            return False
        if _is_public(address):
            return True
        if host.lower().rstrip('.') in self.hosts:
            return True
        return any(address.version == net.version and address in net
                   for net in self.networks)

    def resolve(self, host: str, port: int) -> list[tuple[Any, ...]]:
        """getaddrinfo for ``host``, refusing it if any address is refused
        (a name that also resolves to an internal address is not used)."""
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        if not infos:
            raise HostNotAllowedError(f"{host!r} resolves to no address.")
        refused = [info for info in infos
                   if not self.permits(host, _address_of(info))]
        if refused:
            raise HostNotAllowedError(
                f"{host!r} resolves to {_address_of(refused[0])}, which is "
                f"not a public address (add the host or its network to "
                f"URL_ALLOWED_HOSTS if the worker may reach it).")
        return infos

    def create_connection(self, address: tuple[str, int],
                          timeout: Any = socket._GLOBAL_DEFAULT_TIMEOUT,
                          source_address: Any = None, **_: Any
                          ) -> socket.socket:
        """socket.create_connection, to a checked address only."""
        host, port = address
        error: OSError | None = None
        for family, kind, proto, _name, sockaddr in self.resolve(host, port):
            sock = socket.socket(family, kind, proto)
            try:
                if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:
                    sock.settimeout(timeout)
                if source_address:
                    sock.bind(source_address)
                sock.connect(sockaddr)
                return sock
            except OSError as e:
                error = e
                sock.close()
        raise error if error is not None else OSError(
            f"no address of {host!r} could be connected to")


def _address_of(info: tuple[Any, ...]) -> IPAddress:
    # IPv6 sockaddrs may carry a scope ('fe80::1%eth0').
    return ipaddress.ip_address(str(info[4][0]).split('%', 1)[0])


def is_public_address(text: str) -> bool:
    """For tests and diagnostics: whether the guard treats ``text`` as public."""
    return _is_public(ipaddress.ip_address(text))


def guarded_handlers(guard: HostGuard,
                     connector: Callable[..., Any] | None = None
                     ) -> Iterable[Any]:
    """urllib handlers that connect through ``guard`` and ignore proxies
    (a proxy would connect on our behalf, past the guard). ``connector``
    wraps the guard's connect (a download deadline does)."""
    connect = guard.create_connection
    return (urllib.request.ProxyHandler({}),
            *connection_handlers(connector(connect) if connector else connect))


def connection_handlers(connect: Callable[..., Any]) -> Iterable[Any]:
    """urllib HTTP and HTTPS handlers whose connections are made by
    ``connect`` (a socket.create_connection lookalike)."""

    class _HTTPConnection(http.client.HTTPConnection):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._create_connection = connect

    class _HTTPSConnection(http.client.HTTPSConnection):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._create_connection = connect

    class _HTTPHandler(urllib.request.HTTPHandler):
        def http_open(self, req: Any) -> Any:
            return self.do_open(_HTTPConnection, req)

    class _HTTPSHandler(urllib.request.HTTPSHandler):
        def https_open(self, req: Any) -> Any:
            return self.do_open(_HTTPSConnection, req,
                                context=self._context)

    return (_HTTPHandler(), _HTTPSHandler())
