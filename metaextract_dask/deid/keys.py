"""The de-identification key: generation, loading with strength checks, and the keyed derivations.

Every replacement value comes from HMAC-SHA256 under a sub-key of the user's secret (one sub-key per purpose,
so a UID and a patient pseudonym of the same text never coincide). The same key gives the same results on
every worker and every run without any shared table; another key gives unrelated results; without the key
the originals cannot be recovered by hashing guesses.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path
from typing import Any

__all__ = ["KEY_BYTES", "DeidKeyError", "SecretKey", "keygen", "load_key"]

#: Length of a generated key; also the least a key file must hold.
KEY_BYTES = 32
_HEADER = "# metaextract-dask de-identification key (HMAC-SHA256). Keep it secret; never share it.\n"


class DeidKeyError(ValueError):
    """A key file that is missing, unreadable, too open or too weak."""


class SecretKey:
    """A secret key whose value never shows in a repr, a log line or an exception.

    It pickles (tasks carry it to the workers) but prints as ``SecretKey(<hidden>)``.
    """

    __slots__ = ("_key", "_subkeys", "fingerprint")

    def __init__(self, key: bytes) -> None:
        if len(key) < KEY_BYTES:
            raise DeidKeyError(f"a de-identification key needs at least {KEY_BYTES} bytes, got {len(key)}")
        self._key = bytes(key)
        self._subkeys: dict[str, bytes] = {}
        # An identifier that says which key was used without revealing it (a one-way, domain-separated MAC).
        self.fingerprint = hmac.new(self._key, b"metaextract-deid/fingerprint", hashlib.sha256).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"SecretKey(<hidden>, fingerprint={self.fingerprint})"

    __str__ = __repr__

    def __reduce__(self) -> tuple[Any, ...]:
        return (SecretKey, (self._key,))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretKey) and hmac.compare_digest(self._key, other._key)

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def _sub(self, purpose: str) -> bytes:
        key = self._subkeys.get(purpose)
        if key is None:
            key = self._subkeys[purpose] = hmac.new(self._key, f"metaextract-deid/{purpose}".encode(),
                                                    hashlib.sha256).digest()
        return key

    def mac(self, purpose: str, text: str) -> bytes:
        """HMAC-SHA256 of `text` under the sub-key for `purpose`."""
        return hmac.new(self._sub(purpose), text.encode("utf-8", "surrogateescape"), hashlib.sha256).digest()

    def uid(self, original: str) -> str:
        """A ``2.25.`` UID (PS3.5 B.2: a 128-bit integer) keyed on the original UID."""
        return "2.25." + str(int.from_bytes(self.mac("uid", original.strip().rstrip("\0"))[:16], "big"))

    def pseudonym(self, kind: str, original: str, length: int = 16) -> str:
        """An upper-case base32 pseudonym of `length` characters (fits SH/LO/CS/PN values)."""
        digest = self.mac(f"id/{kind}", original.strip())
        return base64.b32encode(digest).decode("ascii")[:length]

    def days(self, patient: str, low: int, high: int) -> int:
        """A per-patient whole number of days in [low, high] (the modified-dates offset)."""
        n = int.from_bytes(self.mac("date-offset", patient.strip())[:8], "big")
        return low + n % (high - low + 1)


def keygen(path: str | os.PathLike[str]) -> Path:
    """Write a new random key to `path` (mode 0600, never overwriting an existing file).

    Raises
    ------
    FileExistsError
        If `path` exists: an existing key is never replaced (every pseudonym depends on it).
    """
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(_HEADER + secrets.token_hex(KEY_BYTES) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, 0o600)  # the umask may have narrowed it further, never widened: make it exact
    return path


def load_key(path: str | os.PathLike[str]) -> SecretKey:
    """Read a key file written by :func:`keygen` (hex, comment lines allowed).

    Raises
    ------
    DeidKeyError
        If the file is missing or unreadable, readable by group or others, not hex, shorter than
        :data:`KEY_BYTES`, or visibly not random (too few distinct bytes).
    """
    path = Path(path)
    try:
        st = path.stat()
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise DeidKeyError(f"key file {str(path)!r} does not exist (create one with "
                        f"'metaextract-dask keygen {path}')") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DeidKeyError(f"key file {str(path)!r} cannot be read: {type(exc).__name__}") from None
    if not stat.S_ISREG(st.st_mode):
        raise DeidKeyError(f"key file {str(path)!r} is not a regular file")
    if st.st_mode & 0o077:
        raise DeidKeyError(f"key file {str(path)!r} is readable or writable by others (mode "
                        f"{stat.S_IMODE(st.st_mode):04o}); run 'chmod 600 {path}'")
    body = "".join(line.strip() for line in text.splitlines() if not line.lstrip().startswith("#"))
    try:
        key = bytes.fromhex(body)
    except ValueError:
        raise DeidKeyError(f"key file {str(path)!r} does not hold a hex key (write one with "
                        "'metaextract-dask keygen')") from None
    if len(key) < KEY_BYTES:
        raise DeidKeyError(f"key in {str(path)!r} is too short: {len(key)} bytes, at least {KEY_BYTES} needed")
    if len(set(key)) < len(key) // 4:  # 32 random bytes have ~30 distinct values; 'aaaa…' has one
        raise DeidKeyError(f"key in {str(path)!r} is weak (too few distinct bytes): generate one with "
                        "'metaextract-dask keygen'")
    return SecretKey(key)
