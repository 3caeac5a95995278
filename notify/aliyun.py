"""Aliyun SMS (阿里云短信): SendBatchSms (RPC, ``POST {base_url}/``, signature version 1.0,
HMAC-SHA1; ``$ALIBABA_CLOUD_ACCESS_KEY_ID`` / ``$ALIBABA_CLOUD_ACCESS_KEY_SECRET``), filling the
registered template ``aliyun_template_code`` with ``round_id``, ``deadline``, ``site_name``;
``isv.MOBILE_NUMBER_ILLEGAL`` → invalid number, ``isv.BLACK_KEY_CONTROL_LIMIT`` (the number is
on the blacklist, e.g. replied TD) → opted out, ``isv.BUSINESS_LIMIT_CONTROL`` and the
throttling codes → not taken (retried), ``isp.SYSTEM_ERROR`` → ambiguous; ``SignatureDoesNotMatch``,
``InvalidAccessKeyId.*``, ``isv.AMOUNT_NOT_ENOUGH``, ``isv.DAY_LIMIT_CONTROL`` … refuse the
account. ``OutId`` carries the message id; what may have reached Aliyun is looked up with
QuerySendDetails (by number and day, matched on ``OutId``)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING
from urllib.parse import quote
from zoneinfo import ZoneInfo

from kernel.secrets import Secrets
from notify.base import Message, MissingCredentials, SmsSettings, Verdict, json_body

if TYPE_CHECKING:
    import httpx


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

    def __init__(self, sms: SmsSettings) -> None:
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
        data = json_body(response)
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
            data = json_body(response)
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
