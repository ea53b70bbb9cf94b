"""The ``ctx`` a handler gets for one update: ``reply`` and ``call`` as this bot."""

from __future__ import annotations

from functools import partial
from typing import Any

from actors.delivery import Delivery, Inbound
from actors.lanes import update_chat_id

__all__ = ["UpdateContext"]


class UpdateContext:
    """The :class:`~actors.handlers.HandlerContext` of one update: replies go through the
    delivery rules (parking, deadline), other calls straight through the request pipeline."""

    def __init__(self, delivery: Delivery, item: Inbound) -> None:
        self._delivery = delivery
        self._item = item
        self._chat_id = update_chat_id(item.update)

    @property
    def user_id(self) -> int:
        return self._delivery.user_id

    @property
    def chat_id(self) -> int | None:
        return self._chat_id

    async def reply(self, text: str, **params: Any) -> Any:
        """Send ``text`` to the update's chat (None if its delivery was ambiguous)."""
        if self._chat_id is None:
            raise RuntimeError("this update has no chat to reply to")
        return await self._delivery.deliver(
            self._item, "sendMessage", {"chat_id": self._chat_id, "text": text, **params}
        )

    async def call(self, method: str, **params: Any) -> Any:
        """Call any Bot API method as this bot; ``get…`` methods are idempotent reads."""
        client = self._delivery.client()
        reading = method.startswith("get")
        return await self._delivery.pipeline.call(
            method,
            partial(client.call, method, params),
            chat_id=params.get("chat_id"),
            idempotent=reading,
            rate_limited=not reading,
        )
