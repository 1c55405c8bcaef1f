"""Helpers of the ops tests (a unique module name, like tests/switch/switchkit.py)."""

from __future__ import annotations

import os
import socket
import sys


def payswitch(*args: str) -> list[str]:
    """argv of the installed `payswitch` command (the entry point, wherever the
    dispatcher lives)."""
    return [os.path.join(os.path.dirname(sys.executable), "payswitch"), *args]


def unused_port() -> int:
    """A loopback port nothing listens on (bound, read back, closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
