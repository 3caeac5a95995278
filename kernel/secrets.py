"""Secrets come from the environment or from Prefect Secret blocks, never from the config file.

* the ID-hash key (HMAC key for person joins): ``TUBETRAIL_ID_HASH_KEY``, else the Prefect
  Secret block ``tubetrail-id-hash-key``;
* SMS credentials: ``TWILIO_ACCOUNT_SID`` / ``TWILIO_AUTH_TOKEN``, ``ALIBABA_CLOUD_ACCESS_KEY_ID``
  / ``ALIBABA_CLOUD_ACCESS_KEY_SECRET`` (read by the providers of ``notify``).

:class:`Secrets` reads them (pydantic-settings, the environment only) as ``SecretStr``: printed,
logged or put in an exception they show ``**********``, never the value.
"""

from __future__ import annotations

import hashlib
import os

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ID_HASH_KEY_ENV = "TUBETRAIL_ID_HASH_KEY"
ID_HASH_KEY_BLOCK = "tubetrail-id-hash-key"


class MissingSecret(RuntimeError):
    """A secret is not set; the message says where to set it (never what it is)."""


class Secrets(BaseSettings):
    """The secrets the environment holds now (an unset or empty variable: ``None``)."""

    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", frozen=True)

    id_hash_key: SecretStr | None = Field(None, validation_alias=ID_HASH_KEY_ENV)
    twilio_account_sid: SecretStr | None = Field(None, validation_alias="TWILIO_ACCOUNT_SID")
    twilio_auth_token: SecretStr | None = Field(None, validation_alias="TWILIO_AUTH_TOKEN")
    aliyun_access_key_id: SecretStr | None = Field(None, validation_alias="ALIBABA_CLOUD_ACCESS_KEY_ID")
    aliyun_access_key_secret: SecretStr | None = Field(None, validation_alias="ALIBABA_CLOUD_ACCESS_KEY_SECRET")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The environment alone: never a file."""
        return (env_settings,)

    @staticmethod
    def value(secret: SecretStr | None) -> str | None:
        """The text of ``secret``; ``None`` when unset or empty."""
        return (secret.get_secret_value() or None) if secret is not None else None


def _from_prefect_block(name: str) -> SecretStr | None:
    if not os.environ.get("PREFECT_API_URL"):
        return None
    try:
        from prefect.blocks.system import Secret

        return SecretStr(str(Secret.load(name).get()))
    except Exception:  # noqa: BLE001 - a missing block is "not set", whatever Prefect raised
        return None


def id_hash_key() -> bytes:
    """The HMAC key for person joins, normalised to at most one SHA-256 block (RFC 2104)."""
    value = Secrets.value(Secrets().id_hash_key) or Secrets.value(_from_prefect_block(ID_HASH_KEY_BLOCK))
    if not value:
        raise MissingSecret(
            f"the ID-hash key is not set: export {ID_HASH_KEY_ENV} or create the Prefect Secret block"
            f" {ID_HASH_KEY_BLOCK!r}"
        )
    key = value.encode("utf-8")
    if len(key) < 16:
        raise MissingSecret(f"{ID_HASH_KEY_ENV} is too short: use at least 16 characters")
    return hashlib.sha256(key).digest() if len(key) > 64 else key
