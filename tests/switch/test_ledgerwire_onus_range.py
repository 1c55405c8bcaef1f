"""``LedgerWire.onus_range``: the longest [[onus]] prefix a PAN starts with, or None,
as the plain definition (longest matching prefix of the configured list) says, for any
PAN and any set of prefixes (the off-us test first looks at all of them at once)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from payswitch.switch import config
from payswitch.switch.ledgerwire import LedgerWire

_digits = st.text("0123456789", min_size=1, max_size=8)


@given(prefixes=st.lists(_digits, max_size=5, unique=True),
       pan=st.one_of(st.none(), st.text("0123456789", max_size=19)))
def test_onus_range_is_the_longest_configured_prefix(prefixes, pan):
    cfg = config.parse({"ledger": {"enabled": True},
                        "onus": [{"prefix": p} for p in prefixes]})
    wire = LedgerWire(cfg, "postgresql://unused")
    found = wire.onus_range(pan)
    matching = [o for o in cfg.onus if pan and pan.startswith(o.prefix)]
    want = max(matching, key=lambda o: len(o.prefix)) if matching else None
    assert found == want
