"""A loopback TCP proxy in front of PostgreSQL that counts round trips: each time the
client sends after the server has answered, one more. What a user waits for per batch
is these, whatever the library does inside."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
import trio


class Turns:
    def __init__(self) -> None:
        self.count = 0
        self._answered = True  # the first bytes from the client start a round trip

    def client_sent(self) -> None:
        if self._answered:
            self.count += 1
            self._answered = False

    def server_sent(self) -> None:
        self._answered = True


async def _pump(src: trio.SocketStream, dst: trio.SocketStream, seen) -> None:
    while data := await src.receive_some(65536):
        seen()
        await dst.send_all(data)
    await dst.send_eof()


@asynccontextmanager
async def counting_proxy(dsn: str) -> AsyncIterator[tuple[str, dict[int, Turns]]]:
    """Yields a DSN through the proxy and its per-connection counters (by accept order);
    only TCP DSNs (host and port) are supported."""
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    host, port = info.get("host") or "127.0.0.1", int(info.get("port") or 5432)
    turns: dict[int, Turns] = {}

    async def serve(client: trio.SocketStream) -> None:
        t = turns[len(turns)] = Turns()
        server = await trio.open_tcp_stream(host, port)
        async with client, server, trio.open_nursery() as n:
            n.start_soon(_pump, client, server, t.client_sent)
            n.start_soon(_pump, server, client, t.server_sent)

    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(functools.partial(trio.serve_tcp, serve, 0,
                                                            host="127.0.0.1"))
        proxied = psycopg.conninfo.make_conninfo(
            dsn, host="127.0.0.1", port=listener.socket.getsockname()[1])
        yield proxied, turns
        nursery.cancel_scope.cancel()
