"""Shared fixtures: the real parts (PostgreSQL, Mosquitto) for the whole run.

Each run gets its own databases and drops them; see payswitch.lab.realparts.
"""

from __future__ import annotations

import os

import pytest
from hsmkit import (  # noqa: F401  SoftHSM token fixtures
    hsm,
    hsm_scratch,
    hsm_token,
    hsm_tokens,
    issuer_hsm,
    issuer_hsm_token,
    pan_keys,
    terminal_hsm,
    terminal_hsm_token,
)
from hypothesis import HealthCheck, settings

from payswitch.lab import realparts

settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("ci", parent=settings.get_profile("default"), derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
# The switch's duplicate-fingerprint key without an HSM: fixed, so that a duplicate
# sent to a restarted switch (process or in-process) is matched to its original.
os.environ.setdefault("PAYSWITCH_FINGERPRINT_KEY", "5a" * 32)


@pytest.fixture(scope="session")
def pg_admin_dsn():
    with realparts.postgres_server() as dsn:
        yield dsn


@pytest.fixture(scope="session")
def pg_session_dsn(pg_admin_dsn):
    """One scratch database shared by the whole run."""
    with realparts.scratch_database(pg_admin_dsn) as dsn:
        yield dsn


@pytest.fixture
def pg_dsn(pg_admin_dsn):
    """A fresh, empty database for one test."""
    with realparts.scratch_database(pg_admin_dsn) as dsn:
        yield dsn


@pytest.fixture(scope="session")
def mqtt_broker():
    """A Mosquitto of the run's own that queues without limit for subscribers: the
    relay publishes faster than a test's subscriber (aiomqtt in a thread) reads, and a
    broker's default (max_queued_messages 1000, as on 127.0.0.1:1883) drops the
    excess, which a test would take for events the relay lost."""
    with realparts.private_mosquitto(conf="max_queued_messages 0") as addr:
        yield addr
