"""Command authorization: which commands each token role may call, as payment HSMs do.

A token is given one role when it is set up (``make_token(..., role=...)``,
``payswitch hsm init --role``): the first open writes it into the token as a private,
non-modifiable data object (``payswitch.role``), and every later open must ask for the
same role (``TokenConfig.role``) or is refused. So the switch's process cannot open its
own token as ``personalisation`` by changing its configuration.

* ``switch``: translate PIN blocks, verify (PIN, CVV, ARQC, MAC), ARPC, PAN protection,
  key exchange under a ZMK/KBPK. No terminal-side command (encrypt a PIN, DUKPT
  encrypt), no card-side command (generate an ARQC, CVV), nothing that takes a clear
  PIN or a clear key. PIN verification is rate-limited per card.
* ``issuer``: the switch's commands plus issuing ones that take no clear PIN: PVV /
  IBM 3624 offset from an encrypted PIN block, CVV generation.
* ``personalisation``: everything, including clear-PIN commands and clear key
  components. Only the simulators (PIN pads, card personalisation, issuer simulator)
  and a key ceremony use it, each on its own token.

Key ceremony on a ``switch`` or ``issuer`` token: ``with hsm.ceremony(so_pin):`` allows
the clear-key commands (``CEREMONY``) for the block; the SO PIN is checked against a
PBKDF2 hash kept in the role object (written at setup when the SO PIN is known).

A refused command raises ``CommandNotAllowedError`` before the token is touched and is
counted (``Hsm.refused``). Limit, as for key usage: this is enforced by this API, not
by PKCS#11; whoever holds the user PIN can call C_Decrypt directly (hsm/README.md).
"""

from __future__ import annotations

SWITCH = "switch"
ISSUER = "issuer"
PERSONALISATION = "personalisation"
ROLES = (SWITCH, ISSUER, PERSONALISATION)

KEY_MANAGEMENT = frozenset({
    "key_info", "list_keys", "has_key", "random", "delete_key",
    "import_key_cryptogram", "generate_key", "generate_key_tr31", "import_key_tr31",
})
# Commands whose input is a clear key (component): key ceremony only.
CEREMONY = frozenset({"import_key_components"})
# Terminal / card side and clear-PIN commands: never on a switch or issuer token.
CLEAR_PIN = frozenset({
    "encrypt_pin", "dukpt_encrypt_pin", "generate_pvv_clear", "generate_ibm3624_offset_clear",
})
CARD_SIDE = frozenset({"generate_arqc"})

SWITCH_COMMANDS = KEY_MANAGEMENT | {
    "translate_pin", "translate_pin_dukpt", "verify_pin_pvv", "verify_pin_ibm3624",
    "verify_cvv", "verify_arqc", "generate_arpc", "generate_mac", "verify_mac",
    "pan_token", "encrypt_pan", "decrypt_pan", "event_mac",
}
ISSUER_COMMANDS = SWITCH_COMMANDS | {"generate_pvv", "generate_ibm3624_offset", "generate_cvv"}
PERSONALISATION_COMMANDS = ISSUER_COMMANDS | CEREMONY | CLEAR_PIN | CARD_SIDE

COMMANDS: dict[str, frozenset[str]] = {
    SWITCH: frozenset(SWITCH_COMMANDS),
    ISSUER: frozenset(ISSUER_COMMANDS),
    PERSONALISATION: frozenset(PERSONALISATION_COMMANDS),
}
# Roles whose PIN verifications are rate-limited per card (an online PIN oracle).
RATE_LIMITED = frozenset({SWITCH})
PIN_VERIFY_COMMANDS = frozenset({"verify_pin_pvv", "verify_pin_ibm3624"})
