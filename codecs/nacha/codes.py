"""Return reason (R) and change (C) codes used by the reader's checks and the CLI."""

from __future__ import annotations

RETURN_CODES = {
    "R01": "insufficient funds",
    "R02": "account closed",
    "R03": "no account / unable to locate account",
    "R04": "invalid account number structure",
    "R05": "unauthorized debit to consumer account using corporate SEC code",
    "R06": "returned per ODFI's request",
    "R07": "authorization revoked by customer",
    "R08": "payment stopped",
    "R09": "uncollected funds",
    "R10": "customer advises originator is not known and/or not authorized",
    "R11": "customer advises entry not in accordance with the terms of the authorization",
    "R12": "account sold to another DFI",
    "R13": "invalid ACH routing number",
    "R14": "representative payee deceased or unable to continue",
    "R15": "beneficiary or account holder deceased",
    "R16": "account frozen / entry returned per OFAC instruction",
    "R17": "file record edit criteria / questionable entry",
    "R20": "non-transaction account",
    "R21": "invalid company identification",
    "R22": "invalid individual ID number",
    "R23": "credit entry refused by receiver",
    "R24": "duplicate entry",
    "R29": "corporate customer advises not authorized",
    "R31": "permissible return entry (CCD and CTX only)",
    "R33": "return of XCK entry",
}

CHANGE_CODES = {
    "C01": "incorrect DFI account number",
    "C02": "incorrect routing number",
    "C03": "incorrect routing number and DFI account number",
    "C05": "incorrect transaction code",
    "C06": "incorrect DFI account number and transaction code",
    "C07": "incorrect routing number, DFI account number and transaction code",
    "C08": "incorrect receiving DFI identification (IAT only)",
    "C09": "incorrect individual identification number",
    "C13": "addenda format error",
    "C14": "incorrect SEC code for outbound international payment",
}

# Transaction codes: the last digit says credit (1-4) or debit (6-9); 1/6 are
# automated returns and NOCs, 3/8 prenotes, 4/9 zero-dollar (no money moves).
TRANSACTION_CODES = frozenset(
    {21, 22, 23, 24, 26, 27, 28, 29, 31, 32, 33, 34, 36, 37, 38, 39,
     41, 42, 43, 44, 46, 47, 48, 49, 51, 52, 53, 54, 55, 56})
RETURN_OR_NOC_CODES = frozenset({21, 26, 31, 36, 41, 46, 51, 56})
ZERO_AMOUNT_CODES = frozenset({23, 24, 28, 29, 33, 34, 38, 39, 43, 44, 48, 49, 53, 54})
SERVICE_CLASSES = frozenset({200, 220, 225})
SEC_CODES = frozenset({"PPD", "CCD", "WEB", "COR"})


def is_debit(transaction_code: int) -> bool:
    return transaction_code % 10 >= 5
