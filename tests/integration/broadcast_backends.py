"""The broadcast backends tests run on: ``memory://``, a real redis-server, a real Redis Cluster.

Each is an async context manager giving a URL for ``open_broadcast``.  ``single_redis`` uses the
Redis CI starts (``REDIS_URL``) when there is one; ``redis_cluster`` starts three masters of its
own (about two seconds) and yields the ``RedisCluster`` too, for tests that restart a node.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tests.integration.redis_cluster import RedisCluster
from tests.integration.redis_server import RedisServer


@asynccontextmanager
async def in_memory() -> AsyncIterator[str]:
    yield "memory://"


@asynccontextmanager
async def single_redis() -> AsyncIterator[str]:
    url = os.environ.get("REDIS_URL")
    if url is None:
        async with RedisServer() as redis:
            yield redis.url
    else:
        yield url


@asynccontextmanager
async def redis_cluster() -> AsyncIterator[str]:
    async with RedisCluster() as cluster:
        yield cluster.url


EVERY_BACKEND = {"memory": in_memory, "redis": single_redis, "cluster": redis_cluster}
REDIS_BACKENDS = {"redis": single_redis, "cluster": redis_cluster}
