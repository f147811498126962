"""Where an alert may be sent: a webhook's host resolved once at send time, every address checked.

A name is only as safe as what it resolves to: `hooks.example.com` may point at the cloud
metadata service (169.254.169.254) or at this host's own services. `checked_addresses` resolves
the host, refuses it if any address is forbidden, and returns the addresses; the sender then
connects to one of those, never resolving again (no DNS-rebinding window).

Forbidden: link-local addresses (169.254.0.0/16, fe80::/10) and AWS's fd00:ec2::254, unless
`alerts.allow_link_local`; and, for a name, loopback and unspecified addresses (a name is not
where an operator means this host: write `127.0.0.1` or `localhost`, which stay allowed).

    >>> checked_addresses("hooks.example.com", 443, allow_link_local=False)
    ['203.0.113.10']
"""

from __future__ import annotations

import ipaddress
import socket

from driftloop.core.config_ops import metadata_host

AWS_METADATA_V6 = ipaddress.ip_address("fd00:ec2::254")


class ForbiddenHost(ValueError):
    """A webhook host that resolves to an address alerts may not be sent to."""


def _literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _why_forbidden(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, by_name: bool, allow_link_local: bool) -> str:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if not allow_link_local and (ip.is_link_local or ip == AWS_METADATA_V6):
        return "a link-local or cloud metadata address (set alerts.allow_link_local to send there)"
    if by_name and (ip.is_loopback or ip.is_unspecified):
        return "a loopback address (write 127.0.0.1 or localhost in the URL to send to this host)"
    return ""


def checked_addresses(host: str, port: int, allow_link_local: bool) -> list[str]:
    """The addresses of `host` to connect to, each allowed; ForbiddenHost names the first that is not.

    An address literal is checked as written; a name is resolved (socket.gaierror propagates:
    the caller retries it like a connect error).
    """
    host = host.rstrip(".").lower()
    ip = _literal(host)
    if ip is not None:
        why = _why_forbidden(ip, False, allow_link_local)
        if why:
            raise ForbiddenHost(f"webhook host {host} is {why}")
        return [str(ip)]
    if not allow_link_local and metadata_host(host):
        raise ForbiddenHost(f"webhook host {host} is a cloud metadata name (set alerts.allow_link_local to send there)")
    by_name = host != "localhost" and not host.endswith(".localhost")
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(str(info[4][0]).split("%")[0] for info in infos))
    for a in addresses:
        why = _why_forbidden(ipaddress.ip_address(a), by_name, allow_link_local)
        if why:
            raise ForbiddenHost(f"webhook host {host} resolves to {a}, {why}")
    if not addresses:
        raise socket.gaierror(f"{host}: no address")
    return addresses
