"""Sending SMS reminders over HTTP (httpx): provider adapters, retries with backoff on 429, 5xx
and timeouts, a rate limit, and per-message provider errors (invalid number, opted out).

Providers (config ``[sms] provider``; credentials from the environment, never the file):

* ``webhook``: ``POST {base_url}/messages`` with JSON ``{id, to, from, text}`` and the header
  ``Idempotency-Key: <message id>`` (a second guard: the outbox's claims already send each
  message once); ``GET {base_url}/messages/{id}`` answers 200 for a message it took and 404
  ``{"error": "not_found"}`` for one it did not (anything else: it cannot tell);
* ``twilio``: the Messages API, ``POST {base_url}/2010-04-01/Accounts/{AccountSid}/Messages.json``
  (form ``To``, ``From``, ``Body``; basic auth ``$TWILIO_ACCOUNT_SID`` / ``$TWILIO_AUTH_TOKEN``);
  error 21211/21614 → invalid number, 21610 → opted out. Twilio has no idempotency key for
  this call: what may have reached it is looked up in its Messages list, never sent again blindly.

* ``aliyun``: SendBatchSms (RPC, ``POST {base_url}/``, signature version 1.0, HMAC-SHA1;
  ``$ALIBABA_CLOUD_ACCESS_KEY_ID`` / ``$ALIBABA_CLOUD_ACCESS_KEY_SECRET``), filling the
  registered template ``aliyun_template_code`` with ``round_id``, ``deadline``, ``site_name``;
  ``isv.MOBILE_NUMBER_ILLEGAL`` → invalid number, ``isv.BLACK_KEY_CONTROL_LIMIT`` (the number is
  on the blacklist, e.g. replied TD) → opted out, ``isv.BUSINESS_LIMIT_CONTROL`` and
  ``isp.SYSTEM_ERROR`` → ambiguous. ``OutId`` carries the message id.

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

import base64
import hashlib
import hmac
import json
import random
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from urllib.parse import quote
from zoneinfo import ZoneInfo

import httpx

from tubetrail.config import SmsConfig
from tubetrail.secrets import Secrets

#: a sender gives up for now (``pending``) rather than wait longer than this for one retry
MAX_RETRY_WAIT = 60.0


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


def _http_verdict(response: httpx.Response) -> Verdict | None:
    if response.status_code == 429:
        return "retry", None, "HTTP 429", False
    if response.status_code >= 500:
        return "ambiguous", None, f"HTTP {response.status_code}", False
    return None


class WebhookProvider:
    name = "webhook"

    def __init__(self, sms: SmsConfig) -> None:
        self.sms = sms

    def request(self, client: httpx.Client, message: Message) -> httpx.Response:
        return client.post(f"{self.sms.base_url.rstrip('/')}/messages",
                           json={"id": message.message_id, "to": message.phone, "from": self.sms.sender,
                                 "text": message.body},
                           headers={"Idempotency-Key": message.message_id})

    def verdict(self, response: httpx.Response) -> Verdict:
        data = _json(response)
        if response.is_success:
            return "sent", str(data.get("id") or ""), None, False
        if response.status_code in (401, 403):
            return "account", None, f"webhook HTTP {response.status_code}", False
        error = str(data.get("error") or f"HTTP {response.status_code}")
        return "failed", None, error, error == "opted_out"

    def lookup(self, client: httpx.Client, message: Message) -> tuple[bool | None, str | None]:
        """``GET /messages/{id}``: 200 → taken, 404 ``{"error": "not_found"}`` → not taken, else unknown."""
        response = client.get(f"{self.sms.base_url.rstrip('/')}/messages/{message.message_id}")
        data = _json(response)
        if response.status_code == 200:
            return True, str(data.get("id") or "") or None
        if response.status_code == 404 and data.get("error") == "not_found":
            return False, None
        return None, None


class TwilioProvider:
    name = "twilio"
    INVALID_NUMBER = {21211, 21614}
    OPTED_OUT = {21610}

    def __init__(self, sms: SmsConfig) -> None:
        self.sms = sms
        secrets = Secrets()
        self.sid, self.token = Secrets.value(secrets.twilio_account_sid), secrets.twilio_auth_token
        if not self.sid or not Secrets.value(self.token):
            raise MissingCredentials("Twilio needs $TWILIO_ACCOUNT_SID and $TWILIO_AUTH_TOKEN")

    def _auth(self) -> tuple[str, str]:
        return self.sid, self.token.get_secret_value()

    def request(self, client: httpx.Client, message: Message) -> httpx.Response:
        return client.post(f"{self.sms.base_url.rstrip('/')}/2010-04-01/Accounts/{self.sid}/Messages.json",
                           data={"To": message.phone, "From": self.sms.sender, "Body": message.body},
                           auth=self._auth())

    #: authentication, an account that is not active, a test account, a sender ("From") that
    #: the account cannot use: every message would be refused alike
    ACCOUNT = {20003, 20005, 20008, 21212, 21606}

    def messages_url(self) -> str:
        return f"{self.sms.base_url.rstrip('/')}/2010-04-01/Accounts/{self.sid}/Messages.json"

    def verdict(self, response: httpx.Response) -> Verdict:
        data = _json(response)
        if response.is_success:
            return "sent", str(data.get("sid") or ""), None, False
        code = data.get("code")
        if response.status_code in (401, 403) or code in self.ACCOUNT:
            return "account", None, f"Twilio {code or '-'} (HTTP {response.status_code})", False
        if code in self.INVALID_NUMBER:
            return "failed", None, f"invalid_number (Twilio {code})", False
        if code in self.OPTED_OUT:
            return "failed", None, f"opted_out (Twilio {code})", True
        return "failed", None, f"Twilio {code or response.status_code}: {str(data.get('message', ''))[:120]}", False

    def lookup(self, client: httpx.Client, message: Message) -> tuple[bool | None, str | None]:
        """ListMessage by ``To`` and ``From`` (newest first): a message of the same body created
        since the message's first claim is the one taken (one message per person and cool-down)."""
        response = client.get(self.messages_url(), params={"To": message.phone, "From": self.sms.sender,
                                                           "PageSize": 100}, auth=self._auth())
        if not response.is_success:
            return None, None
        since = (message.since or datetime.min.replace(tzinfo=timezone.utc)) - timedelta(minutes=5)
        for item in _json(response).get("messages") or []:
            try:
                created = parsedate_to_datetime(str(item.get("date_created")))
            except (TypeError, ValueError):
                return None, None
            if item.get("body") == message.body and created >= since:
                return True, str(item.get("sid") or "") or None
        return False, None


def aliyun_percent(value: str) -> str:
    """Aliyun's percent-encoding (RFC 3986: space %20, * %2A, ~ kept)."""
    return quote(value, safe="~")


def aliyun_signature(params: dict[str, str], secret: str, method: str = "POST") -> str:
    canonical = "&".join(f"{aliyun_percent(k)}={aliyun_percent(v)}" for k, v in sorted(params.items()))
    to_sign = f"{method}&{aliyun_percent('/')}&{aliyun_percent(canonical)}"
    digest = hmac.new(f"{secret}&".encode(), to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


class AliyunProvider:
    name = "aliyun"
    #: the request was not taken: throttled (per number or per second), a reused nonce
    RETRY_CODES = {"isv.BUSINESS_LIMIT_CONTROL", "Throttling.User", "Throttling", "SignatureNonceUsed"}
    AMBIGUOUS_CODES = {"isp.SYSTEM_ERROR", "InternalError", "ServiceUnavailable"}
    #: the account, its key, signature, balance, daily limit, sign name or template: every message alike
    ACCOUNT_CODES = {"SignatureDoesNotMatch", "InvalidAccessKeyId.NotFound", "InvalidAccessKeyId.Inactive",
                     "InvalidAccessKeyId", "IncompleteSignature", "Forbidden.RAM", "isp.RAM_PERMISSION_DENY",
                     "isv.AMOUNT_NOT_ENOUGH", "isv.DAY_LIMIT_CONTROL", "isv.MONTH_LIMIT_CONTROL",
                     "isv.ACCOUNT_NOT_EXISTS", "isv.ACCOUNT_ABNORMAL", "isv.OUT_OF_SERVICE",
                     "isv.SMS_SIGNATURE_ILLEGAL", "isv.SMS_TEMPLATE_ILLEGAL", "isv.SMS_SIGN_ILLEGAL",
                     "isv.INVALID_PARAMETERS"}
    CHINA = ZoneInfo("Asia/Shanghai")

    def __init__(self, sms: SmsConfig) -> None:
        self.sms = sms
        secrets = Secrets()
        self.key_id, self.secret = Secrets.value(secrets.aliyun_access_key_id), secrets.aliyun_access_key_secret
        if not self.key_id or not Secrets.value(self.secret):
            raise MissingCredentials("Aliyun needs $ALIBABA_CLOUD_ACCESS_KEY_ID and $ALIBABA_CLOUD_ACCESS_KEY_SECRET")

    @staticmethod
    def number(phone: str) -> str:
        """Mainland numbers without +86; others as 00 + country code + number."""
        return phone[3:] if phone.startswith("+86") else "00" + phone.lstrip("+")

    def _signed(self, action: str, params: dict[str, str]) -> dict[str, str]:
        params = {
            "AccessKeyId": self.key_id, "Action": action, "Format": "JSON", "Version": "2017-05-25",
            "SignatureMethod": "HMAC-SHA1", "SignatureVersion": "1.0", "SignatureNonce": uuid.uuid4().hex,
            "Timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), **params,
        }
        params["Signature"] = aliyun_signature(params, self.secret.get_secret_value())
        return params

    def request(self, client: httpx.Client, message: Message) -> httpx.Response:
        params = self._signed("SendBatchSms", {
            "PhoneNumberJson": json.dumps([self.number(message.phone)]),
            "SignNameJson": json.dumps([self.sms.sender], ensure_ascii=False),
            "TemplateCode": self.sms.aliyun_template_code,
            "TemplateParamJson": json.dumps([json.loads(message.params)], ensure_ascii=False),
            "OutId": message.message_id,
        })
        return client.post(f"{self.sms.base_url.rstrip('/')}/", data=params)

    def verdict(self, response: httpx.Response) -> Verdict:
        data = _json(response)
        code = str(data.get("Code") or f"HTTP {response.status_code}")
        if code == "OK":
            return "sent", str(data.get("BizId") or ""), None, False
        if code in self.ACCOUNT_CODES or response.status_code in (401, 403):
            return "account", None, f"Aliyun {code} (HTTP {response.status_code})", False
        if code in self.RETRY_CODES:
            return "retry", None, f"Aliyun {code}", False
        if code in self.AMBIGUOUS_CODES:
            return "ambiguous", None, f"Aliyun {code}", False
        if code == "isv.MOBILE_NUMBER_ILLEGAL":
            return "failed", None, f"invalid_number (Aliyun {code})", False
        if code == "isv.BLACK_KEY_CONTROL_LIMIT":
            return "failed", None, f"opted_out (Aliyun {code})", True
        return "failed", None, f"Aliyun {code}: {str(data.get('Message', ''))[:120]}", False

    def lookup(self, client: httpx.Client, message: Message) -> tuple[bool | None, str | None]:
        """QuerySendDetails by number and day (China time, each day since the first claim), matched on ``OutId``."""
        today = datetime.now(self.CHINA).date()
        day = (message.since or datetime.now(timezone.utc)).astimezone(self.CHINA).date()
        while day <= today:
            response = client.post(f"{self.sms.base_url.rstrip('/')}/", data=self._signed("QuerySendDetails", {
                "PhoneNumber": self.number(message.phone), "SendDate": f"{day:%Y%m%d}",
                "PageSize": "50", "CurrentPage": "1"}))
            data = _json(response)
            if data.get("Code") != "OK":
                return None, None
            details = (data.get("SmsSendDetailDTOs") or {}).get("SmsSendDetailDTO") or []
            for item in details:
                if item.get("OutId") == message.message_id:
                    return True, None
            if int(data.get("TotalCount") or 0) > len(details):
                return None, None  # more than one page for one number and day: not worth guessing
            day += timedelta(days=1)
        return False, None


def _json(response: httpx.Response) -> dict:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def provider_for(sms: SmsConfig):
    if sms.provider == "webhook":
        return WebhookProvider(sms)
    if sms.provider == "twilio":
        return TwilioProvider(sms)
    return AliyunProvider(sms)


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


def lookup_messages(messages: Iterable[Message], provider, sms: SmsConfig) -> list[SendResult]:
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


def send_messages(messages: Iterable[Message], provider, sms: SmsConfig,
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
