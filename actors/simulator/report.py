"""Delivery bookkeeping of the simulated Bot API: was every user message answered once, in order?

The matching rule, which makes "answered exactly once and in order" checkable:

- Simulated users (``add_users``) send texts carrying a unique tag, ``"hello [m<seq> c<chat>]"``,
  where ``seq`` counts the messages of that chat from 1. A reply sent to chat ``c`` answers
  message ``seq`` of ``c`` when its text contains that tag; an echo handler repeats it, and an
  autoreply that quotes the user's text does too.
- A message posted with ``send_user_message`` is tracked by its whole text: a reply to its chat
  answers it when the reply's text contains that text (the earliest such message not yet
  answered; when all are answered, the latest one, which is then a duplicate).
- A reply that answers nothing (a fixed autoreply, a tag of another chat) is counted as
  untracked; it is still a delivered reply.
- Where a reply lands counts: a message in a forum topic, through a business connection or in
  a channel's direct-messages topic is answered there. A reply that matches a message but
  landed elsewhere (the General topic, the bot's own chat) still answers it and is counted as
  *misplaced*.
- An edit by a simulated user carries ``"[e<seq> c<chat>]"``: a reply quoting it is an
  *edit reply*, neither untracked nor a second answer of message ``seq`` (a bot may ignore
  edits; nothing requires an answer).
- A callback query (a button press) is answered by ``answerCallbackQuery`` with its id; each
  is tracked until then.
- A basic group upgraded to a supergroup keeps its messages: a reply to the new chat answers
  the old chat's messages too (that is where Telegram wants them answered).

A message is *answered* when at least one reply matched it, a *duplicate* when more than one
did, and *out of order* when its first answer came after a later message of the same chat had
been answered.
"""

from __future__ import annotations

import re
from array import array
from dataclasses import dataclass

__all__ = [
    "EDIT_PATTERN",
    "NO_PLACE",
    "TAG_PATTERN",
    "BotReport",
    "DeliveryLog",
    "Place",
    "SimReport",
    "edited_text",
    "tagged_text",
]

TAG_PATTERN = re.compile(r"\[m(\d+) c(-?\d+)\]")
EDIT_PATTERN = re.compile(r"\[e(\d+) c(-?\d+)\]")

# Where a message is, or a reply landed, within its chat:
# (message_thread_id, business_connection_id, direct_messages_topic_id).
Place = tuple[int | None, str | None, int | None]
NO_PLACE: Place = (None, None, None)


def tagged_text(seq: int, chat_id: int) -> str:
    """The text a simulated user sends as message ``seq`` of ``chat_id``."""
    return f"hello [m{seq} c{chat_id}]"


def edited_text(seq: int, chat_id: int) -> str:
    """The new text of message ``seq`` of ``chat_id`` after its user edited it."""
    return f"hello, edited [e{seq} c{chat_id}]"


class ChatLog:
    """The user messages of one chat, and how often each was answered."""

    __slots__ = (
        "answers",
        "chat_type",
        "manual",
        "max_answered",
        "message_ids",
        "places",
        "user_id",
    )

    def __init__(self, chat_type: str, user_id: int) -> None:
        self.chat_type = chat_type
        self.user_id = user_id
        self.message_ids = array("q")
        # Answers per message, saturating at 255: one byte a message keeps long runs small.
        self.answers = bytearray()
        self.max_answered = -1
        self.manual: dict[str, list[int]] | None = None
        # The place of each message not at NO_PLACE, by index.
        self.places: dict[int, Place] | None = None

    @property
    def next_seq(self) -> int:
        return len(self.message_ids) + 1


class DeliveryLog:
    """One bot's user messages and replies, matched by the module's rule."""

    __slots__ = (
        "answered",
        "callback_queries",
        "callbacks",
        "callbacks_answered",
        "chats",
        "duplicate_replies",
        "duplicates",
        "edit_replies",
        "migrations",
        "misplaced",
        "out_of_order",
        "replies",
        "untracked_replies",
        "user_messages",
    )

    def __init__(self) -> None:
        self.chats: dict[int, ChatLog] = {}
        self.user_messages = 0
        self.replies = 0
        self.answered = 0
        self.duplicates = 0
        self.duplicate_replies = 0
        self.out_of_order = 0
        self.untracked_replies = 0
        self.misplaced = 0
        self.edit_replies = 0
        self.callback_queries = 0
        self.callbacks_answered = 0
        self.callbacks: dict[str, int] = {}  # unanswered callback query id -> chat id (0: none)
        self.migrations: dict[int, int] = {}  # old chat id -> new (upgraded to a supergroup)

    def chat(self, chat_id: int, chat_type: str, user_id: int) -> ChatLog:
        log = self.chats.get(chat_id)
        if log is None:
            log = self.chats[chat_id] = ChatLog(chat_type, user_id)
        return log

    def user_message(
        self, log: ChatLog, message_id: int, text: str | None, place: Place = NO_PLACE
    ) -> None:
        """Record a user message; ``text`` is given for a manual (untagged) one."""
        log.message_ids.append(message_id)
        log.answers.append(0)
        self.user_messages += 1
        if place != NO_PLACE:
            if log.places is None:
                log.places = {}
            log.places[len(log.answers) - 1] = place
        if text is not None:
            if log.manual is None:
                log.manual = {}
            log.manual.setdefault(text, []).append(len(log.answers) - 1)

    def callback_query(self, query_id: str, chat_id: int | None) -> None:
        """Record a button press that waits for ``answerCallbackQuery``."""
        self.callback_queries += 1
        self.callbacks[query_id] = chat_id if chat_id is not None else 0

    def callback_answered(self, query_id: str) -> None:
        if self.callbacks.pop(query_id, None) is not None:
            self.callbacks_answered += 1

    def migrate(self, old: int, new: int) -> None:
        self.migrations[old] = new

    def reply(self, chat_id: int, text: str, place: Place = NO_PLACE) -> None:
        """Record a delivered reply to ``chat_id`` and match it to the messages it answers."""
        self.replies += 1
        # The chat itself, and the basic groups upgraded into it.
        logs = [(chat_id, self.chats.get(chat_id))]
        if self.migrations:
            logs += [
                (old, self.chats.get(old)) for old, new in self.migrations.items() if new == chat_id
            ]
        matched = False
        for log_chat, log in logs:
            if log is None:
                continue
            if "[m" in text:
                for match in TAG_PATTERN.finditer(text):
                    index = int(match.group(1)) - 1
                    if int(match.group(2)) == log_chat and 0 <= index < len(log.answers):
                        self._answer(log, index, place)
                        matched = True
            if log.manual:
                for needle, indexes in log.manual.items():
                    if needle in text:
                        unanswered = [i for i in indexes if log.answers[i] == 0]
                        self._answer(log, unanswered[0] if unanswered else indexes[-1], place)
                        matched = True
        if not matched:
            if "[e" in text and EDIT_PATTERN.search(text):
                self.edit_replies += 1
            else:
                self.untracked_replies += 1

    def _answer(self, log: ChatLog, index: int, place: Place = NO_PLACE) -> None:
        expected = log.places.get(index, NO_PLACE) if log.places else NO_PLACE
        if place != expected:
            self.misplaced += 1
        count = log.answers[index]
        if count == 0:
            self.answered += 1
            if index < log.max_answered:
                self.out_of_order += 1
            else:
                log.max_answered = index
        else:
            self.duplicate_replies += 1
            if count == 1:
                self.duplicates += 1
        if count < 255:
            log.answers[index] = count + 1

    def unanswered(self) -> tuple[tuple[int, int], ...]:
        """``(chat_id, message_id)`` of every user message no reply answered yet."""
        return tuple(
            (chat_id, log.message_ids[i])
            for chat_id, log in self.chats.items()
            for i, count in enumerate(log.answers)
            if count == 0
        )


@dataclass(frozen=True)
class BotReport:
    """What one simulated bot's users saw (see the module docstring for the matching rule)."""

    bot_id: int
    user_messages: int  # messages the users sent (updates created)
    replies: int  # sendMessage calls that delivered a message
    answered: int  # user messages answered at least once
    duplicates: int  # user messages answered more than once
    duplicate_replies: int  # replies beyond the first to a message
    out_of_order: int  # first answers that came after a later message's of the same chat
    untracked_replies: int  # delivered replies that answered no tracked message
    unanswered: tuple[tuple[int, int], ...]  # (chat_id, message_id) of unanswered messages
    updates_confirmed: int  # updates the bot confirmed with a getUpdates offset
    updates_pending: int  # updates not confirmed yet
    misplaced: int = 0  # answers that landed outside the message's topic or connection
    edit_replies: int = 0  # replies quoting a user's edit
    callback_queries: int = 0  # button presses made
    callbacks_answered: int = 0  # of those, answered with answerCallbackQuery
    unanswered_callbacks: tuple[str, ...] = ()  # ids of callback queries not answered

    @property
    def all_answered_once_in_order(self) -> bool:
        return not self.unanswered and not self.duplicates and not self.out_of_order


@dataclass(frozen=True)
class SimReport:
    """Per-bot delivery reports and their totals."""

    bots: tuple[BotReport, ...]

    def bot(self, bot_id: int) -> BotReport:
        for report in self.bots:
            if report.bot_id == bot_id:
                return report
        raise LookupError(f"no simulated bot has id {bot_id}")

    @property
    def user_messages(self) -> int:
        return sum(b.user_messages for b in self.bots)

    @property
    def replies(self) -> int:
        return sum(b.replies for b in self.bots)

    @property
    def answered(self) -> int:
        return sum(b.answered for b in self.bots)

    @property
    def duplicates(self) -> int:
        return sum(b.duplicates for b in self.bots)

    @property
    def out_of_order(self) -> int:
        return sum(b.out_of_order for b in self.bots)

    @property
    def unanswered(self) -> int:
        return sum(len(b.unanswered) for b in self.bots)

    @property
    def updates_confirmed(self) -> int:
        return sum(b.updates_confirmed for b in self.bots)

    @property
    def misplaced(self) -> int:
        return sum(b.misplaced for b in self.bots)

    @property
    def callback_queries(self) -> int:
        return sum(b.callback_queries for b in self.bots)

    @property
    def callbacks_answered(self) -> int:
        return sum(b.callbacks_answered for b in self.bots)

    @property
    def all_answered_once_in_order(self) -> bool:
        return all(b.all_answered_once_in_order for b in self.bots)

    def summary(self) -> str:
        """One line for a person: counts over all bots."""
        return (
            f"{len(self.bots)} bots: {self.user_messages} user messages, {self.replies} replies; "
            f"{self.answered} answered, {self.unanswered} unanswered, "
            f"{self.duplicates} answered more than once, {self.out_of_order} out of order, "
            f"{self.misplaced} outside their topic or connection; "
            f"{self.callbacks_answered} of {self.callback_queries} button presses answered"
        )
