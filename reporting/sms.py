"""Sending SMS reminders over HTTP (httpx): provider adapters, retries with backoff on 429, 5xx
and timeouts, a rate limit, and per-message provider errors (invalid number, opted out).

Providers (config ``[sms] provider``; credentials from the environment, never the file):

* ``webhook``: ``POST {base_url}/messages`` with JSON ``{id, to, from, text}`` and the header
  ``Idempotency-Key: <message id>``: a gateway that honours it delivers a message once
  whatever the retries or a crashed sender re-sending it;
* ``twilio``: the Messages API, ``POST {base_url}/2010-04-01/Accounts/{AccountSid}/Messages.json``
  (form ``To``, ``From``, ``Body``; basic auth ``$TWILIO_ACCOUNT_SID`` / ``$TWILIO_AUTH_TOKEN``);
  error 21211/21614 → invalid number, 21610 → opted out. Twilio has no idempotency key for
  this call: a sender killed between Twilio's answer and the outbox update re-sends that
  message on the next run (at most one batch).

* ``aliyun``: SendBatchSms (RPC, ``POST {base_url}/``, signature version 1.0, HMAC-SHA1;
  ``$ALIBABA_CLOUD_ACCESS_KEY_ID`` / ``$ALIBABA_CLOUD_ACCESS_KEY_SECRET``), filling the
  registered template ``aliyun_template_code`` with ``round_id``, ``deadline``, ``site_name``;
  ``isv.MOBILE_NUMBER_ILLEGAL`` → invalid number, ``isv.BLACK_KEY_CONTROL_LIMIT`` (the number is
  on the blacklist, e.g. replied TD) → opted out, ``isv.BUSINESS_LIMIT_CONTROL`` and
  ``isp.SYSTEM_ERROR`` → retried. ``OutId`` carries the message id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
import uuid
from datetime import datetime, timezone
from urllib.parse import quote
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import httpx

from tubetrail.config import SmsConfig

RETRYABLE = {429, 500, 502, 503, 504}


@dataclass(frozen=True)
class Message:
    message_id: str
    phone: str
    body: str
    params: str = "{}"  # the template's variables as JSON (Aliyun)


@dataclass(frozen=True)
class SendResult:
    message_id: str
    state: str  # sent | failed (the provider's final word) | pending (gave up for now: the next run retries)
    attempts: int
    provider_message_id: str | None = None
    error: str | None = None
    opted_out: bool = False


class MissingCredentials(RuntimeError):
    """A provider's credentials are not in the environment (the message names the variables)."""


class WebhookProvider:
    name = "webhook"

    def __init__(self, sms: SmsConfig) -> None:
        self.sms = sms

    def request(self, client: httpx.Client, message: Message) -> httpx.Response:
        return client.post(f"{self.sms.base_url.rstrip('/')}/messages",
                           json={"id": message.message_id, "to": message.phone, "from": self.sms.sender,
                                 "text": message.body},
                           headers={"Idempotency-Key": message.message_id})

    def outcome(self, response: httpx.Response) -> tuple[str | None, str | None, bool]:
        """(provider id, error, opted out) of a final answer."""
        data = _json(response)
        if response.is_success:
            return str(data.get("id") or ""), None, False
        error = str(data.get("error") or f"HTTP {response.status_code}")
        return None, error, error == "opted_out"


class TwilioProvider:
    name = "twilio"
    INVALID_NUMBER = {21211, 21614}
    OPTED_OUT = {21610}

    def __init__(self, sms: SmsConfig) -> None:
        self.sms = sms
        self.sid, self.token = os.environ.get("TWILIO_ACCOUNT_SID"), os.environ.get("TWILIO_AUTH_TOKEN")
        if not self.sid or not self.token:
            raise MissingCredentials("Twilio needs $TWILIO_ACCOUNT_SID and $TWILIO_AUTH_TOKEN")

    def request(self, client: httpx.Client, message: Message) -> httpx.Response:
        return client.post(f"{self.sms.base_url.rstrip('/')}/2010-04-01/Accounts/{self.sid}/Messages.json",
                           data={"To": message.phone, "From": self.sms.sender, "Body": message.body},
                           auth=(self.sid, self.token))

    def outcome(self, response: httpx.Response) -> tuple[str | None, str | None, bool]:
        data = _json(response)
        if response.is_success:
            return str(data.get("sid") or ""), None, False
        code = data.get("code")
        if code in self.INVALID_NUMBER:
            return None, f"invalid_number (Twilio {code})", False
        if code in self.OPTED_OUT:
            return None, f"opted_out (Twilio {code})", True
        return None, f"Twilio {code or response.status_code}: {str(data.get('message', ''))[:120]}", False


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
    RETRY_CODES = {"isv.BUSINESS_LIMIT_CONTROL", "isp.SYSTEM_ERROR"}

    def __init__(self, sms: SmsConfig) -> None:
        self.sms = sms
        self.key_id = os.environ.get("ALIBABA_CLOUD_ACCESS_KEY_ID")
        self.secret = os.environ.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
        if not self.key_id or not self.secret:
            raise MissingCredentials("Aliyun needs $ALIBABA_CLOUD_ACCESS_KEY_ID and $ALIBABA_CLOUD_ACCESS_KEY_SECRET")

    @staticmethod
    def number(phone: str) -> str:
        """Mainland numbers without +86; others as 00 + country code + number."""
        return phone[3:] if phone.startswith("+86") else "00" + phone.lstrip("+")

    def request(self, client: httpx.Client, message: Message) -> httpx.Response:
        params = {
            "AccessKeyId": self.key_id, "Action": "SendBatchSms", "Format": "JSON", "Version": "2017-05-25",
            "SignatureMethod": "HMAC-SHA1", "SignatureVersion": "1.0", "SignatureNonce": uuid.uuid4().hex,
            "Timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "PhoneNumberJson": json.dumps([self.number(message.phone)]),
            "SignNameJson": json.dumps([self.sms.sender], ensure_ascii=False),
            "TemplateCode": self.sms.aliyun_template_code,
            "TemplateParamJson": json.dumps([json.loads(message.params)], ensure_ascii=False),
            "OutId": message.message_id,
        }
        params["Signature"] = aliyun_signature(params, self.secret)
        return client.post(f"{self.sms.base_url.rstrip('/')}/", data=params)

    def outcome(self, response: httpx.Response) -> tuple[str | None, str | None, bool]:
        data = _json(response)
        code = str(data.get("Code") or f"HTTP {response.status_code}")
        if code == "OK":
            return str(data.get("BizId") or ""), None, False
        if code == "isv.MOBILE_NUMBER_ILLEGAL":
            return None, f"invalid_number (Aliyun {code})", False
        if code == "isv.BLACK_KEY_CONTROL_LIMIT":
            return None, f"opted_out (Aliyun {code})", True
        return None, f"Aliyun {code}: {str(data.get('Message', ''))[:120]}", False

    def retryable(self, response: httpx.Response) -> bool:
        return str(_json(response).get("Code")) in self.RETRY_CODES


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


def send_messages(messages: Iterable[Message], provider, sms: SmsConfig,
                  sleep: Callable[[float], None] = time.sleep) -> list[SendResult]:
    """Send each message (rate-limited), retrying 429, 5xx and timeouts with exponential backoff
    (honouring ``Retry-After``) up to ``max_attempts``."""
    interval = 1.0 / sms.rate_per_second
    results: list[SendResult] = []
    next_at = time.monotonic()
    with httpx.Client(timeout=sms.timeout_seconds) as client:
        for message in messages:
            attempt, last_error = 0, None
            while True:
                attempt += 1
                wait = next_at - time.monotonic()
                if wait > 0:
                    sleep(wait)
                next_at = max(next_at, time.monotonic()) + interval
                try:
                    response = provider.request(client, message)
                except httpx.TransportError as exc:
                    response, last_error = None, f"{type(exc).__name__}"
                transient = response is not None and (
                    response.status_code in RETRYABLE or getattr(provider, "retryable", lambda r: False)(response))
                if response is not None and not transient:
                    provider_id, error, opted_out = provider.outcome(response)
                    results.append(SendResult(message.message_id, "sent" if error is None else "failed", attempt,
                                              provider_id, error, opted_out))
                    break
                if response is not None:
                    last_error = f"HTTP {response.status_code}"
                if attempt >= sms.max_attempts:
                    results.append(SendResult(message.message_id, "pending", attempt, None,
                                              f"gave up for now after {attempt} attempts: {last_error}"))
                    break
                retry_after = response.headers.get("Retry-After") if response is not None else None
                sleep(min(float(retry_after), 30.0) if retry_after and retry_after.isdigit()
                      else min(0.05 * 2 ** (attempt - 1), 5.0))
    return results
