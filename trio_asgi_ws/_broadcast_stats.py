"""A hub's figures for operators: what ``Broadcast.stats()`` and ``topic_stats()`` return.

Nothing here runs per delivery.  Subscriptions already count ``delivered`` and ``dropped``; the
keeper holds the subscriptions that are open (entered and not yet closed by their reader, which
may still be reading after the hub ended them) and, for closed ones, their final counts.  A call
to ``stats()`` (a scrape) adds the two, so its cost grows with open subscriptions, not messages.
The process's figures (``process_figures``: every open hub, plus what closed hubs counted) are
plain JSON-able dicts, which the metrics export and workers send to their supervisor
(``merge_figures`` adds them).  Per-topic figures exist only for topics the app names with
``topic_label`` (a function from a
topic to a label, or to ``None`` for topics not worth a label of their own), which keeps the
number of label values in the app's hands.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from .broadcast import Subscription

__all__ = [
    "BroadcastStats",
    "ClosedHubs",
    "Figures",
    "StatsKeeper",
    "TopicLabel",
    "TopicStats",
    "empty_figures",
    "merge_figures",
    "process_figures",
    "topic_stats",
]

TopicLabel = Callable[[str], "str | None"]
"""Names the per-topic figures a topic is counted under (``None``: none)."""


@dataclass(frozen=True)
class TopicStats:
    """One topic (or one ``topic_label`` value) in this process."""

    subscribers: int = 0
    """Subscriptions open now."""
    messages: int = 0
    """Published here (``stats()``), or arrived here while the topic had subscribers
    (``topic_stats()``)."""
    delivered: int = 0
    dropped: int = 0
    buffered: int = 0


@dataclass(frozen=True)
class BroadcastStats:
    """A hub's figures since it opened (``Broadcast.stats()``)."""

    status: str
    """The backend's health: ``connected`` or ``reconnecting``."""
    published: int
    """``publish()`` calls made on this hub."""
    received: int
    """Messages the backend brought to this hub for local subscribers (from Redis, or from this
    process's own publishes on ``memory://``)."""
    delivered: int
    """Messages handed to subscribers (and sockets), open and closed subscriptions together."""
    dropped: dict[str, int]
    """Messages lost to overflow policies, by policy."""
    replayed: int
    """Messages given to resuming subscriptions from the history."""
    lost: int
    """Messages published while the backend was unreachable."""
    subscriptions: int
    """Subscriptions open now."""
    buffered: int
    """Messages waiting in subscription buffers now."""
    fullest: float
    """The fullest subscription buffer now, as a fraction of its ``max_buffer`` (0 if none):
    near 1 means a subscriber about to lose messages (or be closed, under ``close``)."""
    topics: dict[str, TopicStats] = field(default_factory=dict)
    """Per ``topic_label`` value, for the topics the app chose to label."""


class StatsKeeper:
    """The accounting behind ``BroadcastStats`` (see the module docstring)."""

    def __init__(self, topic_label: TopicLabel | None) -> None:
        self.topic_label = topic_label
        self.published = 0
        self.open: dict[Subscription, None] = {}
        self._closed_delivered = 0
        self._closed_replayed = 0
        self._closed_dropped: Counter[str] = Counter()
        self._published_by: Counter[str] = Counter()
        self._closed_by: dict[str, list[int]] = {}  # label -> [delivered, dropped]

    def note_publish(self, topic: str) -> None:
        self.published += 1
        if self.topic_label is not None:
            label = self.topic_label(topic)
            if label is not None:
                self._published_by[label] += 1

    def opened(self, subscription: Subscription) -> None:
        self.open[subscription] = None

    def closed(self, subscription: Subscription) -> None:
        """Keep a closed subscription's final counts (once, however often it is closed)."""
        if subscription in self.open:
            del self.open[subscription]
            self._closed_delivered += subscription.delivered
            self._closed_replayed += subscription.replayed
            self._closed_dropped[subscription.overflow] += subscription.dropped
            label = self._label(subscription.topic)
            if label is not None:
                figures = self._closed_by.setdefault(label, [0, 0])
                figures[0] += subscription.delivered
                figures[1] += subscription.dropped

    def _label(self, topic: str) -> str | None:
        return None if self.topic_label is None else self.topic_label(topic)

    def stats(self, *, status: str, received: int, lost: int) -> BroadcastStats:
        delivered, replayed, buffered, fullest = self._closed_delivered, self._closed_replayed, 0, 0.0
        dropped = Counter(self._closed_dropped)
        by_label = {label: [0, done, lost, 0] for label, (done, lost) in self._closed_by.items()}
        for subscription in self.open:
            delivered += subscription.delivered
            replayed += subscription.replayed
            dropped[subscription.overflow] += subscription.dropped
            waiting = subscription.buffered
            buffered += waiting
            fullest = max(fullest, waiting / subscription.max_buffer)
            label = self._label(subscription.topic)
            if label is not None:
                figures = by_label.setdefault(label, [0, 0, 0, 0])
                figures[0] += 1
                figures[1] += subscription.delivered
                figures[2] += subscription.dropped
                figures[3] += waiting
        topics = {
            label: TopicStats(
                subscribers=subscribers,
                messages=self._published_by.get(label, 0),
                delivered=delivered_,
                dropped=dropped_,
                buffered=waiting,
            )
            for label, (subscribers, delivered_, dropped_, waiting) in by_label.items()
        }
        for label in self._published_by.keys() - topics.keys():
            topics[label] = TopicStats(messages=self._published_by[label])
        return BroadcastStats(
            status=status,
            published=self.published,
            received=received,
            delivered=delivered,
            dropped=dict(dropped),
            replayed=replayed,
            lost=lost,
            subscriptions=len(self.open),
            buffered=buffered,
            fullest=fullest,
            topics=topics,
        )


def topic_stats(subscriptions: Iterable[Subscription], arrived: int) -> TopicStats:
    """One topic's figures from its open subscriptions and the messages that arrived for it."""
    subscribers = delivered = dropped = buffered = 0
    for subscription in subscriptions:
        subscribers += 1
        delivered += subscription.delivered
        dropped += subscription.dropped
        buffered += subscription.buffered
    return TopicStats(subscribers, arrived, delivered, dropped, buffered)


# -- the process's figures, for the metrics -----------------------------------------------------

Figures = dict[str, Any]
"""JSON-able broadcast figures of a process (or, merged, of several): see ``process_figures``."""

_COUNTED: Final = ("published", "received", "delivered", "replayed", "lost")
_GAUGES: Final = ("subscriptions", "buffered", "fullest", "hubs")


def empty_figures() -> Figures:
    return {**dict.fromkeys(_COUNTED, 0), "dropped": {}, "topics": {}, **_no_gauges()}


def _no_gauges() -> Figures:
    return {"subscriptions": 0, "buffered": 0, "fullest": 0.0, "hubs": {}}


class ClosedHubs:
    """What hubs that have closed counted, so that the process's counters never go down."""

    def __init__(self) -> None:
        self.figures = empty_figures()

    def add(self, stats: BroadcastStats) -> None:
        self.figures = merge_figures([self.figures, _counted(stats)])


def _counted(stats: BroadcastStats) -> Figures:
    """``stats`` as figures, counters only (what outlives the hub)."""
    figures = empty_figures()
    for name in _COUNTED:
        figures[name] = getattr(stats, name)
    figures["dropped"] = dict(stats.dropped)
    figures["topics"] = {
        label: {"published": topic.messages, "delivered": topic.delivered, "dropped": topic.dropped}
        for label, topic in stats.topics.items()
    }
    return figures


def process_figures(open_stats: list[BroadcastStats], closed: ClosedHubs) -> Figures:
    """The figures of a process: counters of its open and closed hubs, gauges of the open ones."""
    parts = [closed.figures]
    for stats in open_stats:
        figures = _counted(stats)
        figures["subscriptions"] = stats.subscriptions
        figures["buffered"] = stats.buffered
        figures["fullest"] = stats.fullest
        figures["hubs"] = {stats.status: 1}
        for label, topic in stats.topics.items():
            figures["topics"][label]["subscriptions"] = topic.subscribers
        parts.append(figures)
    return merge_figures(parts)


def merge_figures(parts: list[Figures], *, gauges: bool = True) -> Figures:
    """The sum of several complete figures (processes, hubs); ``fullest`` is the largest.

    ``gauges=False`` leaves out the parts' gauges (a worker that has exited holds nothing now).
    """
    total = empty_figures()
    for part in parts:
        for name in _COUNTED:
            total[name] += int(part[name])
        _add_into(total["dropped"], part["dropped"])
        for label, topic in part["topics"].items():
            into = total["topics"].setdefault(label, {})
            _add_into(into, {k: v for k, v in topic.items() if gauges or k != "subscriptions"})
        if gauges:
            total["subscriptions"] += int(part["subscriptions"])
            total["buffered"] += int(part["buffered"])
            total["fullest"] = max(total["fullest"], float(part["fullest"]))
            _add_into(total["hubs"], part["hubs"])
    return total


def _add_into(into: dict[str, int], more: dict[str, int]) -> None:
    for key, value in more.items():
        into[key] = into.get(key, 0) + int(value)
