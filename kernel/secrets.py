"""Secrets come from the environment or from Prefect Secret blocks, never from the config file.

* the ID-hash key (HMAC key for person joins): ``TUBETRAIL_ID_HASH_KEY``, else the Prefect
  Secret block ``tubetrail-id-hash-key``.
"""

from __future__ import annotations

import hashlib
import os

ID_HASH_KEY_ENV = "TUBETRAIL_ID_HASH_KEY"
ID_HASH_KEY_BLOCK = "tubetrail-id-hash-key"


class MissingSecret(RuntimeError):
    """A secret is not set; the message says where to set it (never what it is)."""


def _from_prefect_block(name: str) -> str | None:
    if not os.environ.get("PREFECT_API_URL"):
        return None
    try:
        from prefect.blocks.system import Secret

        return str(Secret.load(name).get())
    except Exception:  # noqa: BLE001 - a missing block is "not set", whatever Prefect raised
        return None


def id_hash_key() -> bytes:
    """The HMAC key for person joins, normalised to at most one SHA-256 block (RFC 2104)."""
    value = os.environ.get(ID_HASH_KEY_ENV) or _from_prefect_block(ID_HASH_KEY_BLOCK)
    if not value:
        raise MissingSecret(
            f"the ID-hash key is not set: export {ID_HASH_KEY_ENV} or create the Prefect Secret block"
            f" {ID_HASH_KEY_BLOCK!r}"
        )
    key = value.encode("utf-8")
    if len(key) < 16:
        raise MissingSecret(f"{ID_HASH_KEY_ENV} is too short: use at least 16 characters")
    return hashlib.sha256(key).digest() if len(key) > 64 else key
