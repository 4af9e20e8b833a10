"""Coupon codes: 100 random bits, written as 20 characters of Crockford's base32 in groups of five.

The database keeps a code's SHA-256 (how a till's code is found) and, until the reveal window after its first
showing has closed (the same request repeated may show it again until then), a copy sealed with the service's key
(the code XOR an HMAC of the coupon id, a pad used once). A reader of the database alone can therefore neither
redeem an issued coupon nor read one it holds the sealed copy of; once the window has closed, nothing but the hash
is left.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from pathlib import Path

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford's: no I, L, O, U to misread
LENGTH = 20  # × 5 bits = 100 bits
GROUP = 5


def new_code() -> str:
    raw = "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))
    return "-".join(raw[i:i + GROUP] for i in range(0, LENGTH, GROUP))


def normalise(code: str) -> str:
    """The code as typed at a till: any case, with or without dashes or spaces; O read as 0, I and L as 1."""
    plain = code.upper().replace("-", "").replace(" ", "")
    return plain.translate(str.maketrans("OIL", "011"))


def code_hash(code: str) -> bytes:
    # 100 random bits need no slow hash: there is nothing to guess from.
    return hashlib.sha256(normalise(code).encode()).digest()


def _pad(key: bytes, coupon_id: str) -> bytes:
    return hmac.new(key, f"jifen-coupon-seal:{coupon_id}".encode(), hashlib.sha256).digest()


def seal(code: str, coupon_id: str, key: bytes) -> bytes:
    plain = normalise(code).encode()
    return bytes(a ^ b for a, b in zip(plain, _pad(key, coupon_id), strict=False))


def unseal(sealed: bytes, coupon_id: str, key: bytes, code_hash_: bytes | None = None) -> str | None:
    """The sealed code; None when it does not unseal to a code (another key sealed it), or to the one whose hash
    is `code_hash_`."""
    try:
        plain = bytes(a ^ b for a, b in zip(sealed, _pad(key, coupon_id), strict=False)).decode("ascii")
    except UnicodeDecodeError:
        return None
    if set(plain) - set(ALPHABET) or (code_hash_ is not None and code_hash(plain) != code_hash_):
        return None
    return "-".join(plain[i:i + GROUP] for i in range(0, len(plain), GROUP))


def load_key(given: str, key_file: Path) -> bytes:
    """The sealing key: the one given (JIFEN_COUPON_KEY), else the key file's, made once with 256 random bits.
    Every process of the service must use the same key, or a code sealed by one cannot be shown by another."""
    if given:
        return given.encode()
    with contextlib.suppress(FileNotFoundError):
        return bytes.fromhex(key_file.read_text().strip())
    key_file.parent.mkdir(parents=True, exist_ok=True)
    # Written aside, then linked into place: linking never overwrites, so when two processes start at once both
    # end up reading the one key that got there first, never a half-written file.
    draft = key_file.with_name(f".{key_file.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(32))
    try:
        with contextlib.suppress(FileExistsError):
            os.link(draft, key_file)
    finally:
        draft.unlink()
    return bytes.fromhex(key_file.read_text().strip())
