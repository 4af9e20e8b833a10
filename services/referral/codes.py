"""Referral codes: one per member, short enough to type, read aloud or print on a receipt, and not guessable from
anything about the member. Pure: the randomness is passed in (by default the `secrets` module's).

Eight characters of an alphabet without look-alikes (no 0/O, 1/I/L) give 31^8 ≈ 8.5 × 10^11 codes (39.6 bits):
a guess hits one of a million members' codes about once in 850,000 tries. Codes are drawn at random, never derived
from the member id, and the service checks each new one against the codes already issued.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping

from shared.refusal import Refusal

ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
LENGTH = 8
_TYPED_SEPARATORS = str.maketrans("", "", " -_")


def new_code(choice: Callable[[str], str] = secrets.choice, length: int = LENGTH) -> str:
    return "".join(choice(ALPHABET) for _ in range(length))


def normalise(typed: str, length: int = LENGTH) -> str | None:
    """A code as a person typed it (any case, with spaces or dashes) in its stored form; None if it cannot be a
    code at all."""
    code = typed.translate(_TYPED_SEPARATORS).upper()
    if len(code) != length or any(c not in ALPHABET for c in code):
        return None
    return code


def owner_of(owners: Mapping[tuple[str, str], str], program_id: str, typed: str, referrer: str | None) -> str:
    """The member whose code was given (`unknown_referral_code`), who must be the referrer named, if one is
    (`referral_code_mismatch`); `owners` maps (programme, code) to its member."""
    code = normalise(typed)
    owner = owners.get((program_id, code)) if code is not None else None
    if owner is None:
        raise Refusal("unknown_referral_code", f"no member of programme {program_id!r} has the referral code given")
    if referrer is not None and owner != referrer:
        raise Refusal("referral_code_mismatch", "the referral code given is not the referrer's")
    return owner
