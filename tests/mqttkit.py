"""An MQTT subscriber for tests: collects every event under a topic prefix (QoS 1).

aiomqtt is asyncio; it runs in a thread of its own so trio tests and sync tests can
both use it. Shared by the ledger relay, switch-ledger and crash tests.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import aiomqtt


class Subscriber:
    """Collects every message under ``prefix`` in a thread of its own (QoS 1)."""

    def __init__(self, host, port, prefix):
        self.host, self.port, self.prefix = host, port, prefix
        self.messages: list[dict] = []
        self.ready = threading.Event()
        self._stop = None
        self._loop = None
        self.thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)

    async def _main(self):
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with aiomqtt.Client(self.host, self.port) as client:
            await client.subscribe(self.prefix + "payswitch/events/#", qos=1)
            self.ready.set()

            async def consume():
                async for m in client.messages:
                    self.messages.append(dict(json.loads(m.payload), _topic=m.topic.value))

            task = asyncio.create_task(consume())
            await self._stop.wait()
            task.cancel()

    def __enter__(self):
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *exc):
        self._loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(10)

    @property
    def ids(self) -> set[str]:
        return {m["event_id"] for m in self.messages}

    def wait_for(self, n, timeout_s=15):
        deadline = time.monotonic() + timeout_s
        while len({m["event_id"] for m in self.messages}) < n:
            assert time.monotonic() < deadline, (len(self.messages), n)
            time.sleep(0.02)
