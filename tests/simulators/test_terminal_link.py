"""The terminal link (simulators/terminal.py open_link) gives back what its block
raised: closing the link must not replace the error with a Cancelled that the reader's
nursery then swallows (the block would look as if it had ended normally)."""

from __future__ import annotations

import functools

import pytest
import trio

from payswitch.simulators.terminal import TransportError, open_link


async def _silent_peer(stream: trio.SocketStream) -> None:
    with trio.move_on_after(5):
        while await stream.receive_some(4096):
            pass


@pytest.mark.parametrize("error", [ValueError("raised in the block"),
                                   TransportError("raised in the block")])
def test_an_error_in_the_block_reaches_the_caller(error: Exception) -> None:
    async def main() -> None:
        with trio.fail_after(10):
            async with trio.open_nursery() as n:
                listeners = await n.start(functools.partial(trio.serve_tcp, _silent_peer, 0,
                                                             host="127.0.0.1"))
                port = listeners[0].socket.getsockname()[1]
                try:
                    with pytest.raises(type(error), match="raised in the block"):
                        async with open_link("127.0.0.1", port):
                            raise error
                finally:
                    n.cancel_scope.cancel()
    trio.run(main)
