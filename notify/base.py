"""What every SMS provider shares: the message and its result, what an answer means
(:data:`Verdict`), the errors a provider raises, and the :class:`SmsProvider` protocol itself.
Standard library only; the HTTP client (httpx) is the sender's (:mod:`notify.sending`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import httpx


@dataclass(frozen=True)
class Message:
    message_id: str
    phone: str
    body: str
    params: str = "{}"  # the template's variables as JSON (Aliyun)
    #: the earliest the provider can have taken this message (the start of its first claim): the
    #: lookup of an ambiguous message looks no further back
    since: datetime | None = None


@dataclass(frozen=True)
class SendResult:
    message_id: str
    #: sent | failed (the provider's final word) | pending (provably not taken: the next run sends
    #: it) | unknown (may have reached the provider: looked up later, never re-sent blindly)
    state: str
    attempts: int
    provider_message_id: str | None = None
    error: str | None = None
    opted_out: bool = False


class MissingCredentials(RuntimeError):
    """A provider's credentials are not in the environment (the message names the variables)."""


class AccountRefused(RuntimeError):
    """The provider refused the account, not a message (credentials, signature, balance, daily
    limit): nothing more can be sent. ``results`` holds the batch's answers until then, the rest
    ``pending``. The text names the provider's code only, never a credential or a number."""

    def __init__(self, message: str, results: list[SendResult] | None = None) -> None:
        super().__init__(message)
        self.results = results or []


#: what one answer means: (kind, provider id, error, opted out); kind is sent | failed | retry
#: (provably not taken) | ambiguous (may have been taken) | account (the account is refused)
Verdict = tuple[str, str | None, str | None, bool]


class SmsSettings(Protocol):
    """What the providers and the sender read of the ``[sms]`` configuration, read-only
    (``kernel.config.SmsConfig`` has these and more)."""

    @property
    def provider(self) -> str: ...
    @property
    def base_url(self) -> str: ...
    @property
    def sender(self) -> str: ...
    @property
    def aliyun_template_code(self) -> str: ...
    @property
    def rate_per_second(self) -> float: ...
    @property
    def max_attempts(self) -> int: ...
    @property
    def timeout_seconds(self) -> float: ...


@runtime_checkable
class SmsProvider(Protocol):
    """One SMS provider's HTTP API. Made from the ``[sms]`` settings by its factory in
    ``notify.PROVIDERS`` (the class itself); the factory raises :class:`MissingCredentials` when
    the provider's credentials are not in the environment, naming the variables only.

    A provider sends one message per request and says what an answer means; the sender
    (:func:`notify.sending.send_messages`, a batch) owns everything around it: the rate limit,
    retries with backoff on proof the request was not taken, the lease deadline, and
    :class:`AccountRefused` when a verdict is ``account``. A provider never retries itself."""

    #: the name ``[sms] provider`` gives and the outbox records
    name: str

    def request(self, client: httpx.Client, message: Message) -> httpx.Response:
        """Send one message: one HTTP request, the message id as the provider's idempotency key
        where it has one (webhook ``Idempotency-Key``, Aliyun ``OutId``)."""
        ...

    def verdict(self, response: httpx.Response) -> Verdict:
        """What the provider's answer to :meth:`request` means (429 and 5xx are judged by the
        sender before this is asked)."""
        ...

    def lookup(self, client: httpx.Client, message: Message) -> tuple[bool | None, str | None]:
        """Whether the provider took ``message`` (sent nothing): True (and its id), False
        (provably not), None (it cannot tell)."""
        ...


def json_body(response: httpx.Response) -> dict:
    """An answer's JSON object; {} when it has none."""
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
