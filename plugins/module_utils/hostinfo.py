"""This host's default addresses, without gathering facts.

``default_addresses()`` gives what Ansible's ``default_ipv4.address`` / ``default_ipv6.address``
facts report: the source address the kernel picks for a route to a public address
(``ip route get``). A UDP socket is connected, which sends nothing, and asked for its local
address. Costs microseconds, where gathering network facts costs a module run (about 2 s).
"""

from __future__ import annotations

import socket

# The same probe destinations as Ansible's network facts (``ip -4/-6 route get ...``).
PROBES = ((socket.AF_INET, "8.8.8.8"), (socket.AF_INET6, "2404:6800:400a:800::1012"))


def default_addresses(socket_factory=socket.socket) -> list[str]:
    """The default-route IPv4 and IPv6 source addresses of this host, IPv4 first; none without a route."""
    found = []
    for family, destination in PROBES:
        try:
            with socket_factory(family, socket.SOCK_DGRAM) as sock:
                sock.connect((destination, 53))
                address = sock.getsockname()[0]
        except OSError:   # no such route, or the family is disabled
            continue
        address = str(address).split("%", 1)[0]
        if address and address not in ("0.0.0.0", "::"):  # noqa: S104 - an unbound answer, not a bind
            found.append(address)
    return found


def with_host_addresses(names: list[str], socket_factory=socket.socket) -> list[str]:
    """``names`` followed by this host's default addresses that are not in it yet."""
    out = list(names)
    for address in default_addresses(socket_factory):
        if address not in out:
            out.append(address)
    return out
