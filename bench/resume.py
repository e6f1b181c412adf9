"""Resume after reconnect, counted: does a subscriber that keeps dropping and resuming miss or
repeat anything while a publisher keeps going?

    python bench/resume.py [--url URL ...] [--messages 3000] [--drop-every 0.02] [--away 0.01]
                           [--history 500]

For each ``--url`` (default ``memory://`` and ``$REDIS_URL``): one hub publishes ``--messages``
numbered messages on one topic (sleeping a millisecond every 10); a reader on another hub on the
same URL (the same one for ``memory://``) reads them, and every ``--drop-every`` seconds it drops
its subscription, stays away ``--away`` seconds, and resumes with ``since=<the last id it read>``.
Printed per URL: how many resumes, how many messages each resume replayed from the history
(median, max), and what the reader got in the end: missing, duplicated and out-of-order messages
(all should be 0), and how many resumes were not ``recovered`` (0 while the history is longer
than what one drop misses).
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import uuid
from contextlib import AsyncExitStack

import trio

from trio_asgi_ws.broadcast import open_broadcast


async def run(url: str, args: argparse.Namespace) -> dict[str, object]:
    topic = f"resume:{uuid.uuid4().hex[:8]}"
    got: list[int] = []
    replayed: list[int] = []
    unrecovered = 0
    async with AsyncExitStack() as stack:
        publisher = await stack.enter_async_context(open_broadcast(url, history=args.history))
        reader_hub = (
            publisher
            if url.startswith("memory")
            else await stack.enter_async_context(open_broadcast(url, history=args.history))
        )
        first = await stack.enter_async_context(reader_hub.subscribe(topic, max_buffer=args.messages))
        done = trio.Event()

        async def publish() -> None:
            for n in range(args.messages):
                await publisher.publish(topic, {"n": n})
                if n % 10 == 0:
                    await trio.sleep(0.001)
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish)
            last = await first.receive()
            got.append(last.json()["n"])
            await first.aclose()
            while got[-1] != args.messages - 1:
                await trio.sleep(args.away)
                async with reader_hub.subscribe(topic, since=last.id, max_buffer=args.messages) as sub:
                    unrecovered += sub.recovered is False
                    replayed.append(sub.replayed)
                    with trio.move_on_after(args.drop_every):
                        async for message in sub:
                            got.append(message.json()["n"])
                            last = message
                            if got[-1] == args.messages - 1:
                                break
    distinct = set(got)
    return {
        "resumes": len(replayed),
        "replayed median": statistics.median(replayed) if replayed else 0,
        "replayed max": max(replayed, default=0),
        "missing": args.messages - len(distinct),
        "duplicates": len(got) - len(distinct),
        "out of order": sum(1 for a, b in itertools.pairwise(got) if b < a),
        "not recovered": unrecovered,
    }


async def main(args: argparse.Namespace) -> None:
    urls = args.url or ["memory://", os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")]
    print(
        f"{args.messages} messages, the reader drops and resumes every {args.drop_every * 1000:.0f} ms, "
        f"after {args.away * 1000:.0f} ms away; history {args.history}\n"
    )
    rows = [(url, await run(url, args)) for url in urls]
    columns = list(rows[0][1])
    print(f"{'backend':<36}" + "".join(f"{column:>16}" for column in columns))
    for url, row in rows:
        print(f"{url:<36}" + "".join(f"{row[column]!s:>16}" for column in columns))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", action="append", help="a broadcast URL (repeatable)")
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--drop-every", type=float, default=0.02)
    parser.add_argument("--away", type=float, default=0.01)
    parser.add_argument("--history", type=int, default=500)
    trio.run(main, parser.parse_args())
