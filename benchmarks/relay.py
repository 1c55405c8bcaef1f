"""Baseline for the e2e benchmark: a plain trio TCP relay that decodes nothing.

``python -m benchmarks.relay --target HOST:PORT`` listens on 127.0.0.1 (free port,
printed as ``relay ready port=P``) and, for each connection, opens one to the target
and copies bytes both ways. What the switch adds on top of this is the cost of
decoding, the pipeline, the database and the second dialect.
"""

from __future__ import annotations

import argparse
import contextlib
import signal

import trio

READ_BYTES = 65536


async def _pipe(src: trio.SocketStream, dst: trio.SocketStream) -> None:
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        while data := await src.receive_some(READ_BYTES):
            await dst.send_all(data)


async def relay(target: tuple[str, int], task_status=trio.TASK_STATUS_IGNORED) -> None:
    async def handle(client: trio.SocketStream) -> None:
        try:
            upstream = await trio.open_tcp_stream(*target)
        except OSError:
            await client.aclose()
            return
        async with client, upstream, trio.open_nursery() as nursery:
            async def one_way(a, b):
                await _pipe(a, b)
                nursery.cancel_scope.cancel()
            nursery.start_soon(one_way, client, upstream)
            nursery.start_soon(one_way, upstream, client)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.relay")
    parser.add_argument("--target", required=True, help="HOST:PORT")
    args = parser.parse_args()
    host, port = args.target.rsplit(":", 1)

    async def run() -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                port_ = await nursery.start(relay, (host, int(port)))
                print(f"relay ready port={port_}", flush=True)
                async for _ in signals:
                    break
                nursery.cancel_scope.cancel()

    trio.run(run)


if __name__ == "__main__":
    main()
