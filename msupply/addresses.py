"""The real address of a request's client: X-Forwarded-For is believed from trusted proxies only."""

import ipaddress
from functools import cache

from django.conf import settings
from django.http import HttpRequest

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@cache
def _trusted_networks(proxies: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(proxy, strict=False) for proxy in proxies)


def _is_trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(request: HttpRequest) -> str | None:
    """The address the request came from, past any proxies listed in settings.TRUSTED_PROXIES.

    A proxy appends the address it received the request from to X-Forwarded-For, so the list is
    read from the right and the first address that is not a trusted proxy is the client's. A
    header sent by anyone else is ignored: a caller cannot choose whose address it counts as.
    """
    address = request.META.get("REMOTE_ADDR") or None
    networks = _trusted_networks(tuple(settings.TRUSTED_PROXIES))
    if address is None or not _is_trusted(address, networks):
        return address
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    for hop in reversed([hop.strip() for hop in forwarded.split(",") if hop.strip()]):
        if not _is_trusted(hop, networks):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                # A garbled hop: the last trusted proxy is the best address there is.
                return address
        address = hop
    return address
