"""The ``ctx`` a handler gets for one update: ``reply`` and ``call`` as this bot.

A reply answers where the question was asked (:func:`reply_target`): in the forum topic of a
topic message (``message_thread_id``), through the business connection of a business message
(``business_connection_id``), in the direct-messages topic of a channel's direct-messages
chat (``direct_messages_topic_id``). ``quote=True`` makes it a reply to the update's message
(``reply_parameters``). A parameter the handler passes wins; passing ``None`` leaves it out.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from actors.delivery import Delivery, Inbound
from actors.lanes import update_chat_id, update_payload

__all__ = ["UpdateContext", "reply_target"]


def _message_of(update: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The message an update is or carries (a callback query's message), else its object."""
    found = update_payload(update)
    if found is None:
        return None
    _kind, payload = found
    carried = payload.get("message")
    if "chat" not in payload and isinstance(carried, Mapping):
        return carried
    return payload


def _whole(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def reply_target(update: Mapping[str, Any]) -> dict[str, Any]:
    """The ``sendMessage`` parameters that put a reply where ``update`` was asked: its
    ``chat_id`` and, as the question had them, ``message_thread_id``,
    ``business_connection_id`` and ``direct_messages_topic_id``. Empty for an update
    without a chat."""
    chat_id = update_chat_id(update)
    if chat_id is None:
        return {}
    target: dict[str, Any] = {"chat_id": chat_id}
    message = _message_of(update)
    if message is None:
        return target
    # A thread id without is_topic_message is a reply thread of a plain supergroup, which
    # sendMessage does not take.
    thread = _whole(message.get("message_thread_id"))
    if thread is not None and message.get("is_topic_message") is True:
        target["message_thread_id"] = thread
    connection = message.get("business_connection_id")
    if isinstance(connection, str) and connection:
        target["business_connection_id"] = connection
    topic = message.get("direct_messages_topic")
    if isinstance(topic, Mapping):
        topic_id = _whole(topic.get("topic_id"))
        if topic_id is not None:
            target["direct_messages_topic_id"] = topic_id
    return target


class UpdateContext:
    """The :class:`~actors.handlers.HandlerContext` of one update: replies go through the
    delivery rules (parking, deadline, chat migration), other calls straight through the
    request pipeline."""

    def __init__(self, delivery: Delivery, item: Inbound) -> None:
        self._delivery = delivery
        self._item = item
        self._target = reply_target(item.update)
        self._chat_id: int | None = self._target.get("chat_id")

    @property
    def user_id(self) -> int:
        return self._delivery.user_id

    @property
    def chat_id(self) -> int | None:
        return self._chat_id

    async def reply(self, text: str, *, quote: bool | str = False, **params: Any) -> Any:
        """Send ``text`` where the update was asked (None if its delivery was ambiguous).

        ``quote=True`` replies to the update's message; a string quotes that part of its
        text. ``params`` are ``sendMessage`` parameters and win over the derived ones; one
        set to ``None`` is left out (``message_thread_id=None``: the General topic).
        """
        if self._chat_id is None and "chat_id" not in params:
            raise RuntimeError("this update has no chat to reply to; pass chat_id=")
        sent: dict[str, Any] = {**self._target, "text": text}
        if quote and "reply_parameters" not in params:
            sent["reply_parameters"] = self._quoting(quote)
        sent.update(params)
        sent = {key: value for key, value in sent.items() if value is not None}
        return await self._delivery.deliver(self._item, "sendMessage", sent)

    def _quoting(self, quote: bool | str) -> dict[str, Any]:
        message = _message_of(self._item.update)
        message_id = _whole(message.get("message_id")) if message is not None else None
        if message_id is None:
            raise RuntimeError("this update has no message to quote; drop quote=")
        # If the message is gone meanwhile, the answer still goes out, unquoted.
        reply: dict[str, Any] = {"message_id": message_id, "allow_sending_without_reply": True}
        if isinstance(quote, str):
            reply["quote"] = quote
        return reply

    async def call(self, method: str, **params: Any) -> Any:
        """Call any Bot API method as this bot; ``get…`` methods are idempotent reads. A
        ``chat_id`` of a group that became a supergroup is sent to the supergroup."""
        client = self._delivery.client()
        reading = method.startswith("get")
        if "chat_id" in params:
            params["chat_id"] = self._delivery.migrations.resolve(params["chat_id"])
        return await self._delivery.pipeline.call(
            method,
            partial(client.call, method, params),
            chat_id=params.get("chat_id"),
            idempotent=reading,
            rate_limited=not reading,
        )
