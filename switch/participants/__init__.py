"""The path of an authorization: per message class (first three MTI digits; repeats,
xx1, share their class's), the participants in order. ``head`` runs first; after it
(``CheckOnus`` is its last), ``onus`` when the switch is the card's issuer, else
``offus``. Adding a participant is a file in this package and a line below.

See switch/README.md, "The path of an authorization"."""

from __future__ import annotations

from dataclasses import dataclass

from payswitch.switch.participants.admit import (
    CheckMac,
    CheckTransaction,
    Identify,
    NetworkManagement,
    NotCarried,
)
from payswitch.switch.participants.advice import StoreAdvice
from payswitch.switch.participants.base import Participant
from payswitch.switch.participants.duplicate import CheckDuplicate
from payswitch.switch.participants.failover import ForwardFailover, RankRoutes
from payswitch.switch.participants.hold import PostLedger
from payswitch.switch.participants.onus import (
    AcknowledgeAdvice,
    AuthorizeOnus,
    CheckOnus,
    PostCompletion,
)
from payswitch.switch.participants.pin import TranslatePin
from payswitch.switch.participants.reversal import (
    ForwardReversal,
    LocateOriginal,
    MatchOriginal,
    StoreReversal,
    VoidLedger,
)
from payswitch.switch.participants.risk import ScoreRisk
from payswitch.switch.participants.route import Route

Step = type[Participant]


@dataclass(frozen=True)
class Path:
    head: tuple[Step, ...]
    onus: tuple[Step, ...] = ()
    offus: tuple[Step, ...] = ()


_AUTHORIZATION = Path(
    head=(Identify, CheckMac, CheckTransaction, CheckDuplicate, CheckOnus),
    onus=(ScoreRisk, AuthorizeOnus),
    offus=(RankRoutes, ScoreRisk, TranslatePin, ForwardFailover, PostLedger),
)

PATHS: dict[str, Path] = {
    "010": _AUTHORIZATION,
    "020": _AUTHORIZATION,
    "012": Path(head=(Identify, CheckMac, CheckDuplicate, CheckOnus),
                onus=(AcknowledgeAdvice,),
                offus=(Route, StoreAdvice)),
    "022": Path(head=(Identify, CheckMac, CheckDuplicate, CheckOnus),
                onus=(LocateOriginal, PostCompletion),
                offus=(Route, StoreAdvice)),
    # A reversal follows its original (on-us or not): one list.
    "040": Path(head=(Identify, CheckMac, CheckDuplicate, LocateOriginal, MatchOriginal,
                      ForwardReversal, VoidLedger)),
    "042": Path(head=(Identify, CheckMac, CheckDuplicate, LocateOriginal, MatchOriginal,
                      StoreReversal, VoidLedger)),
    "080": Path(head=(NetworkManagement,)),
}
NOT_CARRIED = Path(head=(Identify, NotCarried))

__all__ = ["NOT_CARRIED", "PATHS", "Participant", "Path", "Step"]
