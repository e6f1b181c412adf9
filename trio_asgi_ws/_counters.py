"""What the serving path counts, as plain integers: the source of the metrics and the connection log.

Theory of operation
-------------------
Counting is off unless ``serve()`` was asked for metrics or a connection log; then its config
holds one ``Counters`` for the server (``GuardedConfig.counters``), and nothing here imports
``prometheus_client``.

* Every WebSocket handshake gets a ``ConnectionTally``: plain integer attributes that the serving
  path (``_hypercorn_fixes``) increments per message, a few attribute additions with no call, no
  lock, no label lookup.  The tally rides in the scope under ``TALLY_KEY`` so that the router (why
  it rejected), the receive pump (takeovers) and the structured block (a buffer overflow) can add
  to it without knowing about the server.
* An accepted connection's tally is *live* (in ``Counters.live``) until the connection ends; then
  its figures are added to the server's totals and, if asked, one log line is written.
* ``snapshot()`` (at scrape time) is the totals plus every live tally: so long-lived connections
  show their traffic as it happens, and the cost of a scrape grows with open connections, not
  with messages.

Snapshots are plain JSON-able dicts, so that worker processes can send theirs to the process
that serves ``/metrics`` (``_worker_metrics``), which adds them with ``merge``.
"""

from __future__ import annotations

import logging
import sys
from collections import Counter
from typing import Any, Final

import trio

from ._broadcast_stats import Figures, empty_figures, merge_figures
from ._types import Scope

__all__ = [
    "CONNECTION_LOGGER",
    "TALLY_KEY",
    "ConnectionTally",
    "Counters",
    "Snapshot",
    "empty_snapshot",
    "merge",
    "note_rejection",
]

TALLY_KEY: Final = "trio_asgi_ws.tally"
"""Scope key of the connection's ``ConnectionTally`` (absent when nothing is counted)."""

CONNECTION_LOGGER: Final = "trio_asgi_ws.connections"
"""The logger of the one-line-per-WebSocket connection log (INFO)."""

connection_log = logging.getLogger(CONNECTION_LOGGER)

Snapshot = dict[str, Any]
"""``{"open": n, "accepted": n, "received_messages": n, ..., "rejected": {reason: n},
"closes": {"CODE SIDE": n}, "drops": {reason: n}}``: see ``empty_snapshot``."""

_SUMS: Final = (
    "received_messages",
    "received_bytes",
    "sent_messages",
    "sent_bytes",
    "pump_takeovers",
    "receive_overflows",
)
_LABELLED: Final = ("rejected", "closes", "drops")


def empty_snapshot() -> Snapshot:
    """A snapshot of a server that has counted nothing yet."""
    snapshot: Snapshot = {"open": 0, "accepted": 0, **dict.fromkeys(_SUMS, 0)}
    for name in _LABELLED:
        snapshot[name] = {}
    snapshot["broadcast"] = empty_figures()
    return snapshot


def merge(snapshots: list[Snapshot], *, gauges: bool = True) -> Snapshot:
    """The sum of ``snapshots`` (several workers' figures); ``gauges=False`` leaves ``open`` at 0."""
    total = empty_snapshot()
    for snapshot in snapshots:
        for name in ("open", "accepted", *_SUMS):
            if name != "open" or gauges:
                total[name] += int(snapshot.get(name, 0))
        for name in _LABELLED:
            into: dict[str, int] = total[name]
            for label, value in snapshot.get(name, {}).items():
                into[label] = into.get(label, 0) + int(value)
    total["broadcast"] = merge_figures(
        [snapshot.get("broadcast", empty_figures()) for snapshot in snapshots], gauges=gauges
    )
    return total


class ConnectionTally:
    """One WebSocket's figures, kept by the serving path while it is open."""

    __slots__ = (
        "accepted",
        "client",
        "path",
        "pump_takeovers",
        "receive_overflows",
        "received_bytes",
        "received_messages",
        "rejection",
        "sent_bytes",
        "sent_messages",
        "started",
    )

    def __init__(self, scope: Scope) -> None:
        self.path: str = scope.get("path", "")
        client = scope.get("client")
        self.client = f"{client[0]}:{client[1]}" if client else "-"
        self.started = trio.current_time()
        self.accepted = False
        self.rejection: str | None = None
        """Why the app refused the handshake, when it said (``note_rejection``)."""
        self.received_messages = 0
        self.received_bytes = 0
        self.sent_messages = 0
        self.sent_bytes = 0
        self.pump_takeovers = 0
        self.receive_overflows = 0


def note_rejection(scope: Scope, reason: str) -> None:
    """Record why the handshake of ``scope`` is about to be refused (no-op when not counting)."""
    tally = scope.get(TALLY_KEY)
    if tally is not None and tally.rejection is None:
        tally.rejection = reason


class Counters:
    """One server's figures: totals of ended connections plus the live tallies (see module doc).

    ``log_connections``: write one INFO line on ``trio_asgi_ws.connections`` per WebSocket at
    its end.
    """

    def __init__(self, *, log_connections: bool = False) -> None:
        self.log_connections = log_connections
        self.live: set[ConnectionTally] = set()
        self._totals = empty_snapshot()
        self._rejected: Counter[str] = Counter()
        self._closes: Counter[str] = Counter()
        self._drops: Counter[str] = Counter()

    def opened(self, tally: ConnectionTally) -> None:
        """The handshake of ``tally``'s connection was accepted."""
        tally.accepted = True
        self.live.add(tally)
        self._totals["accepted"] += 1

    def rejected(self, tally: ConnectionTally, default: str) -> None:
        """The app refused the handshake (``tally.rejection`` says why, else ``default``)."""
        self._rejected[tally.rejection or default] += 1

    def dropped(self, reason: str) -> None:
        """The serving path dropped a connection (``oversize``, ``send_timeout``, ...)."""
        self._drops[reason] += 1

    def ended(self, tally: ConnectionTally, code: int, side: str, dropped: str | None) -> None:
        """An accepted connection ended with ``code``, closed by ``side`` (``client``/``server``)."""
        if tally not in self.live:
            return
        self.live.discard(tally)
        totals = self._totals
        for name in _SUMS:
            totals[name] += getattr(tally, name)
        self._closes[f"{code} {side}"] += 1
        if self.log_connections:
            _log(tally, code, side, dropped)

    def snapshot(self) -> Snapshot:
        """The figures now: ended connections' totals plus every open one's so far."""
        snapshot = dict(self._totals)
        snapshot["open"] = len(self.live)
        for tally in self.live:
            for name in _SUMS:
                snapshot[name] += getattr(tally, name)
        snapshot["rejected"] = dict(self._rejected)
        snapshot["closes"] = dict(self._closes)
        snapshot["drops"] = dict(self._drops)
        snapshot["broadcast"] = _broadcast_figures()
        return snapshot


def _broadcast_figures() -> Figures:
    """The broadcast hubs of this process (the app's), if the app uses any."""
    broadcast = sys.modules.get("trio_asgi_ws.broadcast")
    return empty_figures() if broadcast is None else broadcast.figures()


def _log(tally: ConnectionTally, code: int, side: str, dropped: str | None) -> None:
    duration = trio.current_time() - tally.started
    how = f"dropped by server ({dropped.replace('_', ' ')})" if dropped else f"closed by {side}"
    connection_log.info(
        "%s %s %s %d after %.3f s; received %d msgs %d B, sent %d msgs %d B",
        tally.client,
        tally.path,
        how,
        code,
        duration,
        tally.received_messages,
        tally.received_bytes,
        tally.sent_messages,
        tally.sent_bytes,
        extra={
            "websocket": {
                "path": tally.path,
                "client": tally.client,
                "duration": duration,
                "close_code": code,
                "closed_by": side,
                "dropped": dropped,
                "received_messages": tally.received_messages,
                "received_bytes": tally.received_bytes,
                "sent_messages": tally.sent_messages,
                "sent_bytes": tally.sent_bytes,
            }
        },
    )
