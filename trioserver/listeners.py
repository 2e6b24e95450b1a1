"""What every HTTP listener of an instance shares (client API and internal HTTP)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hypercorn.config import Config as HypercornConfig

# hypercorn closes idle connections after 5 s by default; a client that reuses one as it closes
# sees "connection closed" (SyTest lost tests to this). Keep them as long as nginx does (and
# longer than a worker keeps its connections to main idle).
KEEP_ALIVE_TIMEOUT_S = 75.0


def host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def hypercorn_config(binds: list[str]) -> HypercornConfig:
    """A hypercorn config for `binds`: no access log (the app logs), errors to
    ``hypercorn.error``, no Server header, long keep-alive. (TLS listeners only: hypercorn is
    imported here, not by every process.)"""
    from hypercorn.config import Config as HypercornConfig

    hc = HypercornConfig()
    hc.bind = binds
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.include_server_header = False
    hc.keep_alive_timeout = KEEP_ALIVE_TIMEOUT_S
    return hc
