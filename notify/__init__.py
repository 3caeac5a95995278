"""Notifying people (通知): SMS providers behind one protocol, and the sender that sends a batch
through one of them. Who is due a reminder and what it says is the domain's
(``reporting/reminders.py``); the outbox and its claims are the warehouse's
(``warehouse/writer.py``); this room only delivers.

* ``notify/base.py``: :class:`SmsProvider` (the protocol), :class:`Message`,
  :class:`SendResult`, the errors :class:`MissingCredentials` and :class:`AccountRefused`;
* ``notify/sending.py``: :func:`~notify.sending.send_messages` (a batch: rate limit, retries,
  lease deadline) and :func:`~notify.sending.lookup_messages` (settle what may have arrived);
* one module per provider: ``webhook.py``, ``twilio.py``, ``aliyun.py``.

:data:`PROVIDERS` is the one list of providers: ``[sms] provider`` must name one of them
(:func:`check_provider`; the CLI checks it with the rest of the configuration). **Adding a provider** is a module with a class that
follows :class:`SmsProvider` (its constructor takes the ``[sms]`` settings) plus one line in
:data:`PROVIDERS`. Standard library and httpx only; nothing here imports the application.
"""

from __future__ import annotations

from collections.abc import Callable

from kernel.config import ConfigError
from notify.aliyun import AliyunProvider
from notify.base import AccountRefused, Message, MissingCredentials, SendResult, SmsProvider, SmsSettings
from notify.twilio import TwilioProvider
from notify.webhook import WebhookProvider

__all__ = ["PROVIDERS", "check_provider", "AccountRefused", "Message", "MissingCredentials", "SendResult", "SmsProvider",
           "provider_for"]

#: the SMS providers by the name ``[sms] provider`` gives: name → factory from the ``[sms]``
#: settings (raises :class:`MissingCredentials`). One line per provider.
PROVIDERS: dict[str, Callable[[SmsSettings], SmsProvider]] = {
    "webhook": WebhookProvider,
    "twilio": TwilioProvider,
    "aliyun": AliyunProvider,
}


def check_provider(sms: SmsSettings, prefix: str = "sms") -> None:
    """Refuse a ``[sms] provider`` that names no provider of :data:`PROVIDERS` (exit 2, one line)."""
    if sms.provider not in PROVIDERS:
        *others, last = PROVIDERS
        raise ConfigError(f"{prefix}.provider: expected {', '.join(others)} or {last}, got {sms.provider!r}")


def provider_for(sms: SmsSettings) -> SmsProvider:
    """The provider ``sms.provider`` names, made from the settings. Raises
    :class:`MissingCredentials` when its credentials are not in the environment, ConfigError for
    a name that is not in :data:`PROVIDERS` (:func:`check_provider`)."""
    check_provider(sms)
    return PROVIDERS[sms.provider](sms)
