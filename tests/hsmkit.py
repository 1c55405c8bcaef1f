"""pytest fixtures for SoftHSM test tokens (imported by tests/conftest.py; moved from
hsm/testing.py so that the runtime package never imports pytest).

SoftHSM reads its configuration once per process, so one session-wide directory holds
every test token, all made before the library loads:

* ``hsm_token`` / ``hsm``: the switch side token ``switch-test`` (role ``switch``: no
  clear-PIN, PIN-pad or card-side command) and an ``Hsm`` on it.
* ``issuer_hsm_token`` / ``issuer_hsm``: the issuer side token ``issuer-test`` (network
  simulators keep their keys apart from the switch, as a real issuer does; role
  ``personalisation``, as the simulator also personalises the cards).
* ``terminal_hsm_token`` / ``terminal_hsm``: the terminal side token ``terminal-test``
  (role ``personalisation``: the PIN pads' TPK/BDK and the card personalisation keys).
* ``hsm_scratch``: an ``Hsm`` on the ``scratch-test`` token (role ``personalisation``),
  for tests that create and delete keys freely (use unique labels: the token lives for
  the whole run).

No key is loaded by these fixtures; call ``payswitch.hsm.devkeys`` for the test set.
Only for tests: this module imports pytest, which is a dev dependency.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from payswitch.hsm import roles
from payswitch.hsm.core import Hsm
from payswitch.hsm.token import DEV_PIN, TokenConfig, make_token

SWITCH_TOKEN = "switch-test"
ISSUER_TOKEN = "issuer-test"
SCRATCH_TOKEN = "scratch-test"
TERMINAL_TOKEN = "terminal-test"


@pytest.fixture(scope="session")
def hsm_tokens(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TokenConfig]:
    d = tmp_path_factory.mktemp("softhsm")
    return {
        label: make_token(d, label, pin=DEV_PIN, role=role)
        for label, role in ((SWITCH_TOKEN, roles.SWITCH),
                            (ISSUER_TOKEN, roles.PERSONALISATION),
                            (SCRATCH_TOKEN, roles.PERSONALISATION),
                            (TERMINAL_TOKEN, roles.PERSONALISATION))
    }


@pytest.fixture(scope="session")
def hsm_token(hsm_tokens: dict[str, TokenConfig]) -> TokenConfig:
    return hsm_tokens[SWITCH_TOKEN]


@pytest.fixture(scope="session")
def issuer_hsm_token(hsm_tokens: dict[str, TokenConfig]) -> TokenConfig:
    return hsm_tokens[ISSUER_TOKEN]


@pytest.fixture(scope="session")
def hsm(hsm_token: TokenConfig) -> Iterator[Hsm]:
    with Hsm(hsm_token) as h:
        yield h


@pytest.fixture(scope="session")
def issuer_hsm(issuer_hsm_token: TokenConfig) -> Iterator[Hsm]:
    with Hsm(issuer_hsm_token) as h:
        yield h


@pytest.fixture(scope="session")
def terminal_hsm_token(hsm_tokens: dict[str, TokenConfig]) -> TokenConfig:
    return hsm_tokens[TERMINAL_TOKEN]


@pytest.fixture(scope="session")
def terminal_hsm(terminal_hsm_token: TokenConfig) -> Iterator[Hsm]:
    with Hsm(terminal_hsm_token) as h:
        yield h


@pytest.fixture(scope="session")
def hsm_scratch(hsm_tokens: dict[str, TokenConfig]) -> Iterator[Hsm]:
    with Hsm(hsm_tokens[SCRATCH_TOKEN]) as h:
        yield h


def clear_test_key(label: str) -> bytes:
    """The clear value of a TEST key (``payswitch.hsm.devkeys``): what an independent
    library (hmac, cryptography) computes with to check the token's answer."""
    from payswitch.hsm import devkeys
    return bytes.fromhex(devkeys.TEST_KEYS[label].components[0])


@pytest.fixture(scope="module")
def pan_keys(hsm_scratch: Hsm) -> Iterator[dict[str, str]]:
    """The TEST TKN, DEK and EVK imported on the scratch token under labels of the
    module's own (deleted after it): {TEST label: scratch label}."""
    import uuid

    from payswitch.hsm import devkeys
    made: dict[str, str] = {}
    for label in (devkeys.TKN, devkeys.DEK, devkeys.EVK):
        made[label] = f"{label}-{uuid.uuid4().hex[:8]}"
        hsm_scratch.import_key_components(made[label], devkeys.TEST_KEYS[label].key_type,
                                          [clear_test_key(label)])
    yield made
    for label in made.values():
        hsm_scratch.delete_key(label)
