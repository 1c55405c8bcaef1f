"""The fixed TEST key set for development, tests, simulators and the demo.

*** TEST KEYS ONLY. Every clear component below is public (it is in the repository).
*** Never load them into a token that protects real cards or real money.

Three token roles, each loaded by one function:

=====================  =====================================================  ===========
function               keys (label: type)                                     who
=====================  =====================================================  ===========
load_switch_keys       tpk.terminals TPK, bdk.terminals BDK (TDES DUKPT),     the switch
                       bdk-aes.terminals BDK (AES DUKPT),
                       zpk.{visa,mastercard} ZPK, zak.{visa,mastercard} ZAK,
                       zmk.{visa,mastercard} ZMK, dek.pan DEK, tkn.pan TKN,
                       evk.ledger EVK (ledger event chain MAC)
load_issuer_keys       zpk.N ZPK, zak.N ZAK, zmk.N ZMK, pvk.N PVK, cvk.N CVK,  a network
                       mkac.N MK-AC, for each network N in visa, mastercard   simulator
load_terminal_keys     tpk.terminals TPK, bdk.terminals BDK,                  terminal /
                       bdk-aes.terminals BDK (AES), and the cards' issuer     load
                       keys pvk.N, cvk.N, mkac.N (to personalise test cards:  generator
                       PVV, CVV/iCVV/CVV2, ARQC as the chip would)
=====================  =====================================================  ===========

The switch and the issuer simulators share exactly the ZPK/ZAK/ZMK of each link, as
two real parties would after a key exchange. The labels are module constants
(``TPK``, ``BDK``, ``zpk("visa")``...), so callers never spell them by hand.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

from payswitch.hsm import roles
from payswitch.hsm.core import Hsm
from payswitch.hsm.errors import KeyExistsError
from payswitch.hsm.token import DEV_SO_PIN, ENV_SO_PIN, TokenConfig, make_token

NETWORKS = ("visa", "mastercard")

TPK = "tpk.terminals"
BDK = "bdk.terminals"
BDK_AES = "bdk-aes.terminals"  # AES-128 BDK for AES DUKPT (X9.24-3) terminals
DEK = "dek.pan"
TKN = "tkn.pan"
EVK = "evk.ledger"  # the ledger's event chain MAC (switch/ledgerwire.py)


def zpk(network: str) -> str:
    return f"zpk.{network}"


def zak(network: str) -> str:
    return f"zak.{network}"


def zmk(network: str) -> str:
    return f"zmk.{network}"


def pvk(network: str) -> str:
    return f"pvk.{network}"


def cvk(network: str) -> str:
    return f"cvk.{network}"


def mkac(network: str) -> str:
    return f"mkac.{network}"


@dataclass(frozen=True)
class DevKey:
    """A TEST key: type, clear components (hex) with their KCVs, and the key's KCV."""

    label: str
    key_type: str
    components: tuple[str, ...]
    component_kcvs: tuple[str | None, ...]
    kcv: str | None  # of the whole key (TDES: psec.des.generate_kcv); None: not pinned
    alg: str | None = None

    @property
    def clear(self) -> bytes:
        """The TEST key's clear value (XOR of its components)."""
        out = bytes(len(bytes.fromhex(self.components[0])))
        for c in self.components:
            out = bytes(a ^ b for a, b in zip(out, bytes.fromhex(c), strict=True))
        return out


def _k(label, key_type, c1, k1, c2, k2, kcv) -> DevKey:
    return DevKey(label, key_type, (c1, c2), (k1, k2), kcv)


# fmt: off
TEST_KEYS: dict[str, DevKey] = {k.label: k for k in (
    _k(zmk("visa"), "ZMK", "49DC8FD0E002E6898F2A43DFCBE61A79", "A18C4D",
       "9276F464467AE375FEAECB4F0443E63D", "533E97", "74896C"),
    _k(zmk("mastercard"), "ZMK", "B52C40FECDFB51837A7A8313544F268F", "1B0215",
       "382A4A6D466E1C4FC1A4C4F7ECEC866B", "97C8FE", "966C6F"),
    _k(TPK, "TPK", "3202A7C8B3E0CB54FEA4E37A54F2259E", "E18ADD",
       "79A1F734E00840FBF8518F85803B6E6D", "B27B98", "A44902"),
    _k(BDK, "BDK", "3EB66BA283AD34D97592430DE33B7046", "FA0B18",
       "73AE4FDA4F92970461ADF7676B236125", "294435", "B12948"),
    _k(zpk("visa"), "ZPK", "3BB6C737E515B051F8DACEDAB31C7CBF", "CAE73E",
       "46F46D374F2AAB4586E964F17F579783", "60E6D6", "BDA0B6"),
    _k(zpk("mastercard"), "ZPK", "B94A1A85A4A173F4C23D38519D37F208", "8C03F4",
       "A26D89078631E5B9C7D04C3DD308AE85", "B20327", "3BCCF1"),
    _k(zak("visa"), "ZAK", "F21A4FD9731F10EC9EEC23E6F1F8F449", "1207AF",
       "46BCFD2AB66D2623C13BF20D7A89C254", "59F8EC", "483D73"),
    _k(zak("mastercard"), "ZAK", "1F761CB0752F23CE5ECDE6BCA420F770", "C474EA",
       "43E031F22A1CAB9201B65B852315107C", "A91089", "37A5D9"),
    _k(pvk("visa"), "PVK", "7C4391295B19C757F204ECA42C9E31A4", "F7B288",
       "ABD0B6B32A43499D91C28543F410C4C8", "F91C9E", "25E914"),
    _k(pvk("mastercard"), "PVK", "A42676C485A7C1D0C879236B89DCB92C", "3B5D10",
       "9880EF62D9BF13CDC44F75E97A700B8F", "0D2250", "96F50D"),
    _k(cvk("visa"), "CVK", "852C43583851202C7540D53745ABD504", "AB3509",
       "29BA61E09D1CBAFD5437438A5126D6A2", "7ED069", "DCC3F1"),
    _k(cvk("mastercard"), "CVK", "D32AE5FD734389FB85C8543280BF86FE", "E4C48F",
       "790BBA3E6BB95E15022CD54C796BAD2C", "3E550D", "95DDA9"),
    _k(mkac("visa"), "MK-AC", "DFC1E5FBA254738AE00E156768A4797F", "C07F19",
       "EADCEA1A31AD86E39BCB4FD3E0DAB610", "4B4BD7", "3C7672"),
    _k(mkac("mastercard"), "MK-AC", "E520DF64B63DC243E5D0BCE337FB8C2C", "C9EDB4",
       "0257388089235883F2799DD59886B315", "E77761", "CEDFF4"),
    DevKey(BDK_AES, "BDK", ("A6ACAB2F1438F73DA588D6EDEEAC8ADE",), (None,), None, "AES"),
    DevKey(DEK, "DEK", ("EAE909B1AE004010CDB9E4C28B903B795FC21EC954EC27992EB80711D71D0919",),
           (None,), None, "AES"),
    DevKey(TKN, "TKN", ("6979255931FB0861766872FBF557714856B1F2898675B0ECEA1A1C94B1944772",),
           (None,), None, "HMAC"),
    DevKey(EVK, "EVK", ("6FDF9FA0A3840952F950FB09610645B88F74AC47BA864E927F7D4780B7210EC9",),
           (None,), None, "HMAC"),
)}
# fmt: on

SWITCH_LABELS = (TPK, BDK, BDK_AES, DEK, TKN, EVK) + tuple(
    f(n) for n in NETWORKS for f in (zpk, zak, zmk)
)
ISSUER_LABELS = tuple(f(n) for n in NETWORKS for f in (zpk, zak, zmk, pvk, cvk, mkac))
TERMINAL_LABELS = (TPK, BDK, BDK_AES) + tuple(f(n) for n in NETWORKS for f in (pvk, cvk, mkac))


def load(hsm: Hsm, labels: tuple[str, ...]) -> dict[str, str]:
    """Import the named TEST keys (each component checked by KCV); keys already there
    are kept if their KCV matches. Returns label -> KCV. On a switch or issuer token
    this is a key ceremony: it needs the SO PIN the token was made with (the config's,
    else ``PAYSWITCH_HSM_SO_PIN``, else the dev SO PIN)."""
    return load_dev_keys(hsm, [TEST_KEYS[label] for label in labels])


def load_dev_keys(hsm: Hsm, keys: list[DevKey]) -> dict[str, str]:
    """Import TEST keys given as ``DevKey`` (a test's own as well as ``TEST_KEYS``),
    as ``load`` does: a key ceremony on a switch or issuer token."""
    with _ceremony(hsm):
        return {dk.label: _load_one(hsm, dk) for dk in keys}


@contextlib.contextmanager
def _ceremony(hsm: Hsm) -> Iterator[None]:
    if hsm.role == roles.PERSONALISATION:
        yield
        return
    with hsm.ceremony(hsm.config.so_pin or os.environ.get(ENV_SO_PIN) or DEV_SO_PIN):
        yield


def _load_one(hsm: Hsm, dk: DevKey) -> str:
    try:
        return hsm.import_key_components(
            dk.label,
            dk.key_type,
            [bytes.fromhex(c) for c in dk.components],
            list(dk.component_kcvs),
            alg=dk.alg,
            kcv=dk.kcv,
        )
    except KeyExistsError:
        info = hsm.key_info(dk.label)
        if info.key_type.value != dk.key_type or (dk.kcv and info.kcv != dk.kcv):
            raise
        return info.kcv


def load_switch_keys(hsm: Hsm) -> dict[str, str]:
    """The switch's TEST keys: terminals' TPK and BDK, per-link ZPK/ZAK/ZMK, PAN keys."""
    return load(hsm, SWITCH_LABELS)


def load_issuer_keys(hsm: Hsm) -> dict[str, str]:
    """A network simulator's TEST keys (acting as issuer): link ZPK/ZAK/ZMK, PVK, CVK,
    MK-AC for every network in NETWORKS."""
    return load(hsm, ISSUER_LABELS)


def load_terminal_keys(hsm: Hsm) -> dict[str, str]:
    """The terminal generator's TEST keys: TPK and BDK (the PIN pad's keys), and the
    issuer keys it needs to personalise test cards (PVV, CVV/iCVV/CVV2, ARQC)."""
    return load(hsm, TERMINAL_LABELS)


def load_standin_keys(hsm: Hsm, networks: tuple[str, ...]) -> dict[str, str]:
    """The issuer keys a network grants the switch for stand-in card checks (PVK, CVK,
    MK-AC of each network named), under the issuer's own labels: on the switch's token
    a key ceremony, as two parties share a key by components. The switch's config then
    names them by label (``[routing.standin."<prefix>"] pvk / cvk / mkac``)."""
    return load(hsm, tuple(f(n) for n in networks for f in (pvk, cvk, mkac)))


# side -> (token label, loader, role). The issuer simulator also plays the card
# personalisation bureau (PVVs from the cards' clear PINs): personalisation role.
SIDES = {
    "switch": ("payswitch-switch", load_switch_keys, roles.SWITCH),
    "issuer": ("payswitch-issuer", load_issuer_keys, roles.PERSONALISATION),
    "terminal": ("payswitch-terminal", load_terminal_keys, roles.PERSONALISATION),
}


def make_dev_tokens(directory: str, pin: str | None = None,
                    standin: tuple[str, ...] = ()) -> dict[str, TokenConfig]:
    """Demo/dev setup in one call: the switch, issuer and terminal tokens in
    ``directory`` (all made before the library loads, as SoftHSM requires), each with
    its TEST keys; the switch's also with the stand-in keys of the networks in
    ``standin`` (``load_standin_keys``). Returns side -> TokenConfig; open each with
    ``Hsm(config)``. Idempotent: existing tokens and keys are kept (KCVs checked)."""
    configs = {side: make_token(directory, label, pin=pin, role=role)
               for side, (label, _, role) in SIDES.items()}
    for side, (_, loader, _) in SIDES.items():
        with Hsm(configs[side]) as h:
            loader(h)
            if side == "switch" and standin:
                load_standin_keys(h, standin)
    return configs
