"""What a Redis-backed hub receives from Redis when each process serves only some of the topics.

    python bench/topics.py [--redis URL] [--processes 4] [--topics 100] [--per-process 25]
                           [--messages 4000] [--repo DIR ...]

Starts ``--processes`` hub processes on one Redis; each subscribes to its own ``--per-process``
topics (process i takes topics ``i*per .. i*per+per-1``), then the main process publishes
``--messages`` messages round-robin over all ``--topics`` topics through a hub of its own.  Each
hub process counts the messages its backend handed to the hub (``Broadcast._deliver`` calls: what
it received from Redis) and what its subscribers got.  Redis's own ``total_net_output_bytes``
delta says what Redis sent in all.  Every ``--repo`` checkout (default: this one) is measured in
turn, so the run before per-topic subscriptions and the one after print side by side.

Expected: with pattern subscriptions every process receives every message; with per-topic
subscriptions each receives only its topics' share (here a quarter).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _processes import LineReader, describe_checkout

REPO = Path(__file__).resolve().parent.parent

HUB = r"""
import os, sys, trio
sys.path.insert(0, sys.argv[3])  # before the editable install's finder, which PYTHONPATH is not
from trio_asgi_ws import broadcast
received = 0
original = broadcast.Broadcast._deliver
async def counting(self, message):
    global received
    received += 1
    await original(self, message)
broadcast.Broadcast._deliver = counting

async def main(url, topics):
    got = 0
    async def read(sub):
        nonlocal got
        async for _ in sub:
            got += 1
    async with broadcast.open_broadcast(url) as hub, trio.open_nursery() as nursery:
        for topic in topics:
            sub = hub.subscribe(topic, max_buffer=10_000)
            await sub.__aenter__()
            nursery.start_soon(read, sub)
        print("ready", flush=True)
        async with trio.lowlevel.FdStream(os.dup(0)) as stdin:
            await stdin.receive_some()  # the bench says: all published
        await trio.sleep(1.0)  # let the last ones arrive
        print(received, got, flush=True)
        nursery.cancel_scope.cancel()

trio.run(main, sys.argv[1], sys.argv[2].split(","))
"""


async def redis_output_bytes(url: str) -> int:
    from coredis import Redis

    client: Redis[bytes] = Redis.from_url(url)
    async with client:
        info = await client.info("stats")
    return int(info["total_net_output_bytes"])


async def measure(repo: Path, args: argparse.Namespace) -> tuple[list[tuple[int, int]], int]:
    topics = [f"room:{n}" for n in range(args.topics)]
    children = []
    for i in range(args.processes):
        mine = topics[i * args.per_process : (i + 1) * args.per_process]
        children.append(
            await trio.lowlevel.open_process(
                [sys.executable, "-c", HUB, args.redis, ",".join(mine), str(repo)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
        )
    readers = [LineReader(child.stdout) for child in children]  # type: ignore[arg-type]
    for reader in readers:
        assert await reader.readline() == b"ready"
    sys.path.insert(0, str(repo))
    from trio_asgi_ws.broadcast import open_broadcast

    before = await redis_output_bytes(args.redis)
    async with open_broadcast(args.redis) as hub:
        for n in range(args.messages):
            await hub.publish(topics[n % args.topics], {"n": n})
    for child in children:
        assert child.stdin is not None
        await child.stdin.send_all(b"go\n")
    counts = []
    for reader, child in zip(readers, children, strict=True):
        received, got = (await reader.readline()).split()
        counts.append((int(received), int(got)))
        await child.wait()
    sent = await redis_output_bytes(args.redis) - before
    sys.path.remove(str(repo))
    for name in [name for name in sys.modules if name.startswith("trio_asgi_ws")]:
        del sys.modules[name]
    return counts, sent


async def main(args: argparse.Namespace) -> None:
    repos = args.repo or [REPO]
    print(
        f"{args.processes} hub processes on {args.redis}, {args.topics} topics, {args.per_process} "
        f"subscribed per process, {args.messages} messages published round-robin\n"
    )
    print(f"{'checkout':<52} {'received from Redis (per process)':>36} {'delivered':>10} {'Redis sent':>12}")
    for repo in repos:
        counts, sent = await measure(repo.resolve(), args)
        received = "/".join(str(r) for r, _ in counts)
        delivered = sum(g for _, g in counts)
        print(f"{describe_checkout(repo.resolve()):<52} {received:>36} {delivered:>10} {sent / 1e6:>9.2f} MB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--topics", type=int, default=100)
    parser.add_argument("--per-process", type=int, default=25)
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--repo", type=Path, action="append", help="a checkout to measure (repeatable)")
    trio.run(main, parser.parse_args())
