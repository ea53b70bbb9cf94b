"""A handler module that tests check was never imported (its code never ran): a module's
import runs whatever it holds, so botvisor imports one only for a token Telegram accepted."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from actors import HandlerContext


async def handle(update: Mapping[str, Any], ctx: HandlerContext) -> None:
    """Answer nothing."""
