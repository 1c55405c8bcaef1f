"""Hypothesis strategies for valid NACHA models (what the writer must accept)."""

from __future__ import annotations

import datetime as dt

from hypothesis import strategies as st

from payswitch.codecs.nacha import (
    Batch,
    Entry,
    NachaFile,
    NocAddenda,
    PaymentAddenda,
    ReturnAddenda,
    check_digit,
)

ODFI = "09100001"


def text(n: int, min_size: int = 0):
    """Printable ASCII without leading/trailing blanks (the format pads with them)."""
    chars = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
    return st.text(chars, min_size=min_size, max_size=n).map(str.strip).filter(
        lambda s: len(s) >= min_size)


def digits(n: int):
    return st.text("0123456789", min_size=n, max_size=n)


routing = digits(8).map(lambda d: d + str(check_digit(d)))
dates = st.dates(dt.date(2000, 1, 1), dt.date(2099, 12, 31))


@st.composite
def entries(draw, sec: str, service_class: int, n: int) -> tuple[Entry, ...]:
    out = []
    for i in range(n):
        trace = ODFI + str(i + 1).zfill(7)
        if sec == "COR":
            code = draw(st.sampled_from([21, 26, 31, 36]))
            if service_class == 220:
                code = draw(st.sampled_from([21, 31]))
            elif service_class == 225:
                code = draw(st.sampled_from([26, 36]))
            amount = 0
            addenda = (NocAddenda(draw(st.sampled_from(["C01", "C02", "C03", "C05"])),
                                  draw(digits(15)), draw(digits(8)), draw(text(29, 1)), trace),)
        else:
            credit = {220: True, 225: False}.get(service_class, draw(st.booleans()))
            ret = draw(st.booleans())
            if ret:
                code = draw(st.sampled_from([21, 31] if credit else [26, 36]))
                addenda = (ReturnAddenda(
                    "R" + draw(digits(2)), draw(digits(15)), draw(digits(8)), trace,
                    draw(st.sampled_from(["", "261101"])), draw(text(44))),)
            else:
                code = draw(st.sampled_from([22, 23, 32, 33] if credit else [27, 28, 37, 38]))
                addenda = draw(st.sampled_from([(), (PaymentAddenda(draw(text(80))),)]))
            amount = 0 if code % 5 == 3 else draw(st.integers(0, 10**10 - 1))
        web = sec == "WEB" and code not in (21, 26, 31, 36)
        out.append(Entry(
            transaction_code=code, routing=draw(routing), account=draw(text(17, 1)),
            amount=amount, individual_id=draw(text(15)), individual_name=draw(text(22)),
            trace_number=trace,
            discretionary_data=draw(st.sampled_from(["R", "S"])) if web else draw(text(2)),
            addenda=addenda))
    return tuple(out)


@st.composite
def batches(draw, number: int) -> Batch:
    sec = draw(st.sampled_from(["PPD", "CCD", "WEB", "COR"]))
    service_class = draw(st.sampled_from([200, 220, 225]))
    return Batch(
        service_class=service_class, company_name=draw(text(16)),
        company_id=draw(text(10)), sec_code=sec, entry_description=draw(text(10)),
        effective_date=draw(dates), odfi=ODFI, batch_number=number,
        entries=draw(entries(sec, service_class, draw(st.integers(0, 4)))),
        discretionary_data=draw(text(20)), descriptive_date=draw(text(6)),
        settlement_date=draw(st.sampled_from(["", "335"])),
        originator_status=draw(st.sampled_from(["0", "1", "2"])),
        message_auth_code=draw(text(19)))


@st.composite
def files(draw) -> NachaFile:
    n = draw(st.integers(0, 3))
    return NachaFile(
        immediate_destination=draw(routing),
        immediate_origin=draw(st.one_of(routing, digits(10))),
        creation_date=draw(dates), file_id_modifier=draw(st.sampled_from("A9Z0")),
        creation_time=draw(st.sampled_from(["", "0000", "2359", "1230"])),
        destination_name=draw(text(23)), origin_name=draw(text(23)),
        reference_code=draw(text(8)), priority_code=draw(st.integers(0, 99)),
        batches=tuple(draw(batches(i + 1)) for i in range(n)))
