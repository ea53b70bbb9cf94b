"""Listen addresses (``host:port``) of botvisor's HTTP listeners: the admin API and webhooks."""

from __future__ import annotations

import ipaddress

__all__ = ["LISTEN_RULE", "is_loopback", "split_listen"]

LISTEN_RULE = "be 'host:port' with a port from 0 to 65535"


def split_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:8080"`` -> ``("127.0.0.1", 8080)``; ``"[::1]:80"`` -> ``("::1", 80)``."""
    host, sep, port_text = listen.rpartition(":")
    if not (sep and host and port_text.isascii() and port_text.isdigit()):
        raise ValueError(f"a listen address must {LISTEN_RULE}, got {listen!r}")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"a listen address must {LISTEN_RULE}, got {listen!r}")
    return host.strip("[]"), port


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name, an address, or ``[ipv6]``) is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
