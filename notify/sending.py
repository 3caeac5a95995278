"""Sending a batch of SMS messages over HTTP (httpx) through one :class:`~notify.base.SmsProvider`:
retries with backoff on 429 and on proof the request was not taken, a rate limit, the sender's
lease deadline, and per-message provider errors (invalid number, opted out). The providers
(``notify/webhook.py``, ``notify/twilio.py``, ``notify/aliyun.py``; config ``[sms] provider``,
credentials from the environment, never the file) only make one request and say what its
answer means.

What a request's answer means (:func:`send_messages`):

* the provider's answer for the message (accepted, or refused: invalid number, opted out) is
  final: ``sent`` / ``failed``;
* an answer that proves the request was not taken (429, Aliyun's throttling codes) or a
  transport error before the request left (connection refused, connect timeout, no pooled
  connection) is retried with jittered exponential backoff, ``Retry-After`` honoured (seconds or
  an HTTP date), up to ``max_attempts``; then ``pending`` for the next run;
* an answer that may come after the provider took the message (read timeout, a broken
  connection, 5xx, ``isp.SYSTEM_ERROR``) is ``unknown``: never sent again blindly. A later run
  looks it up at the provider (``lookup``): webhook ``GET {base_url}/messages/{id}``; Twilio's
  Messages list (ListMessage, by ``To`` and ``From``, matched on body and ``date_created``);
  Aliyun's QuerySendDetails (by number and day, matched on ``OutId``). Found → ``sent``,
  provably not there → ``pending`` again, the provider cannot tell → stays ``unknown``;
* a refusal of the account (credentials, signature, balance, daily limit: webhook 401/403,
  Twilio 401 / 20003, Aliyun ``SignatureDoesNotMatch``, ``InvalidAccessKeyId.*``,
  ``isv.AMOUNT_NOT_ENOUGH``, ``isv.DAY_LIMIT_CONTROL`` …) stops the send: :class:`AccountRefused`
  (its text names the provider's code, never a credential), the messages stay ``pending``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

import httpx

from notify.base import AccountRefused, Message, SendResult, SmsProvider, SmsSettings, Verdict

#: a sender gives up for now (``pending``) rather than wait longer than this for one retry
MAX_RETRY_WAIT = 60.0


def _http_verdict(response: httpx.Response) -> Verdict | None:
    if response.status_code == 429:
        return "retry", None, "HTTP 429", False
    if response.status_code >= 500:
        return "ambiguous", None, f"HTTP {response.status_code}", False
    return None


#: transport errors raised before the request left this machine: safe to send again
NEVER_LEFT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


def retry_delay(response: httpx.Response | None, attempt: int, rng: random.Random,
                now: datetime | None = None) -> float:
    """Seconds to wait before attempt ``attempt + 1``: ``Retry-After`` (seconds, or an HTTP date
    read against the answer's ``Date``, else ``now``) plus a little jitter, or else exponential
    backoff with full jitter (0.05 s doubling, at most 5 s)."""
    value = response.headers.get("Retry-After", "").strip() if response is not None else ""
    if value:
        asked: float | None
        try:
            asked = float(value)
        except ValueError:
            try:
                at = parsedate_to_datetime(value)
                try:
                    base = parsedate_to_datetime(response.headers.get("Date", ""))
                except (TypeError, ValueError):
                    base = now or datetime.now(timezone.utc)
                asked = (at - base).total_seconds()
            except (TypeError, ValueError):
                asked = None
        if asked is not None:
            asked = max(asked, 0.0)
            return asked + rng.uniform(0.0, 0.1 * asked + 0.05)
    return rng.uniform(0.5, 1.0) * min(0.05 * 2 ** (attempt - 1), 5.0)


def lookup_messages(messages: Iterable[Message], provider: SmsProvider, sms: SmsSettings) -> list[SendResult]:
    """Settle messages that may have reached the provider (``unknown``, or claimed by a sender
    whose lease ran out): taken → ``sent``, provably not → ``pending``, cannot tell → ``unknown``.
    Sends nothing."""
    results: list[SendResult] = []
    with httpx.Client(timeout=sms.timeout_seconds) as client:
        for message in messages:
            try:
                found, provider_id = provider.lookup(client, message)
            except httpx.HTTPError as exc:
                found, provider_id = None, f"{type(exc).__name__}"
            if found is True:
                results.append(SendResult(message.message_id, "sent", 0, provider_id or None,
                                          None))
            elif found is False:
                results.append(SendResult(message.message_id, "pending", 0, None,
                                          "not taken by the provider (looked up)"))
            else:
                results.append(SendResult(message.message_id, "unknown", 0, None,
                                          "may have reached the provider; it could not tell"))
    return results


def send_messages(messages: Iterable[Message], provider: SmsProvider, sms: SmsSettings,
                  sleep: Callable[[float], None] = time.sleep, deadline: float | None = None,
                  rng: random.Random | None = None) -> list[SendResult]:
    """Send each message once (rate-limited; see the module's text for what each answer means).
    ``deadline`` (``time.monotonic()``): the end of the sender's lease; no request starts that
    could still be under way after it, and the messages left are ``pending`` (never tried).
    Raises :class:`AccountRefused` (with the answers so far) when the account is refused."""
    rng = rng or random.Random()
    interval = 1.0 / sms.rate_per_second
    margin = 3 * sms.timeout_seconds  # connect + write + read of one request
    results: list[SendResult] = []
    queue = list(messages)
    next_at = time.monotonic()

    def rest_pending(start: int, why: str) -> list[SendResult]:
        return [SendResult(m.message_id, "pending", 0, None, why) for m in queue[start:]]

    with httpx.Client(timeout=sms.timeout_seconds) as client:
        for index, message in enumerate(queue):
            attempt, last_error = 0, None
            while True:
                wait = next_at - time.monotonic()
                if wait > 0:
                    sleep(wait)
                if deadline is not None and time.monotonic() + margin > deadline:
                    if attempt:
                        results.append(SendResult(message.message_id, "pending", attempt, None,
                                                  f"the lease ran out between attempts: {last_error}"))
                        index += 1
                    return results + rest_pending(index, "not tried: the sender's lease ran out")
                attempt += 1
                next_at = max(next_at, time.monotonic()) + interval
                response = None
                try:
                    response = provider.request(client, message)
                except NEVER_LEFT as exc:
                    kind, provider_id, error, opted_out = "retry", None, type(exc).__name__, False
                except httpx.TransportError as exc:  # read timeout, broken connection: it may have been taken
                    kind, provider_id, error, opted_out = "ambiguous", None, type(exc).__name__, False
                else:
                    kind, provider_id, error, opted_out = _http_verdict(response) or provider.verdict(response)
                if kind in ("sent", "failed"):
                    results.append(SendResult(message.message_id, kind, attempt, provider_id, error, opted_out))
                    break
                if kind == "ambiguous":
                    results.append(SendResult(message.message_id, "unknown", attempt, None,
                                              f"may have reached the provider: {error}"))
                    break
                if kind == "account":
                    results.append(SendResult(message.message_id, "pending", attempt, None,
                                              f"the provider refused the account: {error}"))
                    raise AccountRefused(
                        f"SMS provider {provider.name} refused the account: {error}; sending stopped, "
                        "the messages stay pending (check the provider's credentials, balance and limits)",
                        results + rest_pending(index + 1, "not tried: the provider refused the account"))
                last_error = error
                delay = retry_delay(response, attempt, rng)
                if attempt >= sms.max_attempts or delay > MAX_RETRY_WAIT:
                    results.append(SendResult(message.message_id, "pending", attempt, None,
                                              f"gave up for now after {attempt} attempts: {last_error}"))
                    break
                sleep(delay)
    return results
