"""Listen addresses (``host:port``) of botvisor's HTTP listeners: the admin API and webhooks."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import AfterValidator

from actors.validation import rule_error

__all__ = ["LISTEN_RULE", "ListenAddress", "check_tls_pair", "is_loopback", "split_listen"]

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


def _listen_address(value: str) -> str:
    try:
        split_listen(value)
    except ValueError:
        raise rule_error("", f"must {LISTEN_RULE}, got {value!r}") from None
    return value


# A config field holding a listen address: ``host:port``, checked where it is declared.
ListenAddress = Annotated[str, AfterValidator(_listen_address)]


def check_tls_pair(tls_cert: str | None, tls_key: str | None) -> None:
    """A listener's certificate and key come together: raise the rule naming the missing one."""
    if (tls_cert is None) != (tls_key is None):
        given, missing = ("tls_cert", "tls_key") if tls_key is None else ("tls_key", "tls_cert")
        raise rule_error(missing, f"must be set with {given} (HTTPS needs both), got None")
