"""A loopback SMS gateway that answers like the providers, for the tests and the demo: the
generic webhook (``POST /messages``, honouring ``Idempotency-Key`` unless ``dedupe=False``;
``GET /messages/{id}`` looks one up), Twilio's Messages API (``POST`` and ``GET``
``/2010-04-01/Accounts/{sid}/Messages.json``: CreateMessage, form-encoded, basic auth, and
ListMessage by ``To`` / ``From``) and Aliyun's SendBatchSms and QuerySendDetails (``POST /``,
signature checked with ``aliyun_secret``). It can answer 429 and 500 on chosen requests, slow
down, stall after taking a message (the sender's read timeout comes after delivery), refuse
numbers as invalid or opted out, refuse the account, and offer no lookup at all.

It keeps what it delivered: ``deliveries`` (message key → phone; with ``dedupe`` a key seen
again is a duplicate suppressed, counted in ``duplicates``), ``posts`` (message key → every
send request that reached it, de-duplicated or not) and, for Twilio, every raw request so tests
can validate them against Twilio's OpenAPI description."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from tubetrail.loopback import LoopbackServer


@dataclass
class GatewayState:
    fail_statuses: list[int] = field(default_factory=list)  # answered, in order, before any success
    delay_seconds: float = 0.0
    invalid_numbers: set[str] = field(default_factory=set)
    opted_out_numbers: set[str] = field(default_factory=set)
    deliveries: dict[str, str] = field(default_factory=dict)
    duplicates: int = 0
    requests: int = 0
    raw_requests: list[dict] = field(default_factory=list)
    aliyun_secret: str = "loopback-secret"
    aliyun_throttled: int = 0  # the first N Aliyun requests answer isv.BUSINESS_LIMIT_CONTROL
    dedupe: bool = True  # False: every send request is a delivery, as with Twilio
    stall_first: int = 0  # the first N deliveries: taken, then the answer waits stall_seconds
    stall_seconds: float = 0.0
    account_refusal: str | None = None  # refuse the account (Aliyun: this code)
    twilio_sid: str | None = None  # the only account SID Twilio's endpoints accept
    lookup: bool = True  # False: the gateway cannot tell what it took (501)
    posts: dict[str, int] = field(default_factory=dict)
    twilio_messages: list[dict] = field(default_factory=list)
    aliyun_details: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def per_phone(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for phone in self.deliveries.values():
            counts[phone] = counts.get(phone, 0) + 1
        return counts

    def take(self, key: str, phone: str) -> bool:
        """Record one send request of message ``key``; False when it is a duplicate suppressed."""
        with self.lock:
            self.posts[key] = self.posts.get(key, 0) + 1
            seen = key in self.deliveries
            if seen:
                self.duplicates += 1
            self.deliveries[key] = phone
            return not (seen and self.dedupe)

    def stall(self) -> None:
        with self.lock:
            stalling = self.stall_first > 0
            self.stall_first -= stalling
        if stalling:
            time.sleep(self.stall_seconds)


class LoopbackGateway(LoopbackServer):
    def __init__(self, port: int = 0, *, fail_statuses: Iterable[int] = (), delay_seconds: float = 0.0,
                 invalid_numbers: Iterable[str] = (), opted_out_numbers: Iterable[str] = (),
                 aliyun_throttled: int = 0, dedupe: bool = True, stall_first: int = 0, stall_seconds: float = 0.0,
                 account_refusal: str | None = None, twilio_sid: str | None = None, lookup: bool = True) -> None:
        self.state = GatewayState(list(fail_statuses), delay_seconds, set(invalid_numbers), set(opted_out_numbers),
                                  aliyun_throttled=aliyun_throttled, dedupe=dedupe, stall_first=stall_first,
                                  stall_seconds=stall_seconds, account_refusal=account_refusal,
                                  twilio_sid=twilio_sid, lookup=lookup)
        state = self.state

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                url = urlsplit(self.path)
                if not state.lookup:
                    return self._answer(501, {"error": "no lookup here"})
                if url.path.startswith("/messages/"):
                    key = url.path.removeprefix("/messages/")
                    with state.lock:
                        phone = state.deliveries.get(key)
                    if phone is None:
                        return self._answer(404, {"error": "not_found"})
                    return self._answer(200, {"id": f"wh-{key}", "status": "delivered"})
                if url.path.startswith("/2010-04-01/Accounts/") and url.path.endswith("/Messages.json"):
                    if (refused := self._twilio_refused(url.path)) is not None:
                        return refused
                    query = {k: v[0] for k, v in parse_qs(url.query).items()}
                    with state.lock:
                        state.raw_requests.append({"method": "get", "path": url.path, "query": query,
                                                   "headers": dict(self.headers), "body": b""})
                        found = [m for m in reversed(state.twilio_messages)
                                 if m["to"] == query.get("To", m["to"]) and m["from"] == query.get("From", m["from"])]
                    size = int(query.get("PageSize", 50))
                    return self._answer(200, {"messages": found[:size], "page": 0, "page_size": size,
                                              "start": 0, "end": min(size, len(found)), "next_page_uri": None})
                self._answer(404, {"error": "not found"})

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if state.delay_seconds:
                    time.sleep(state.delay_seconds)
                with state.lock:
                    state.requests += 1
                    status = state.fail_statuses.pop(0) if state.fail_statuses else None
                if status is not None:
                    return self._answer(status, {"error": "try later"}, {"Retry-After": "0"} if status == 429 else None)
                if self.path == "/messages":
                    self._webhook(body)
                elif self.path.startswith("/2010-04-01/Accounts/") and self.path.endswith("/Messages.json"):
                    self._twilio(body)
                elif self.path == "/":
                    self._aliyun(body)
                else:
                    self._answer(404, {"error": "not found"})

            def _webhook(self, body: bytes) -> None:
                if state.account_refusal:
                    return self._answer(401, {"error": "unauthorized"})
                data = json.loads(body or b"{}")
                phone, key = data.get("to", ""), self.headers.get("Idempotency-Key") or data.get("id")
                if phone in state.invalid_numbers:
                    return self._answer(400, {"error": "invalid_number"})
                if phone in state.opted_out_numbers:
                    return self._answer(400, {"error": "opted_out"})
                state.take(key, phone)
                state.stall()
                self._answer(201, {"id": f"wh-{key}"})

            def _twilio_refused(self, path: str):
                auth = self.headers.get("Authorization", "")
                sid = path.split("/")[3]
                if (state.account_refusal or (state.twilio_sid and sid != state.twilio_sid)
                        or not auth.startswith("Basic ") or not base64.b64decode(auth[6:]).decode().startswith(f"{sid}:")):
                    self._answer(401, {"code": 20003, "message": "Authenticate", "status": 401})
                    return True
                return None

            def _twilio(self, body: bytes) -> None:
                form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
                with state.lock:
                    state.raw_requests.append({"method": "post", "path": self.path, "headers": dict(self.headers),
                                               "body": body})
                if self._twilio_refused(self.path) is not None:
                    return
                phone = form.get("To", "")
                if phone in state.invalid_numbers:
                    return self._answer(400, {"code": 21211, "message": "Invalid 'To' Phone Number"})
                if phone in state.opted_out_numbers:
                    return self._answer(400, {"code": 21610, "message": "Attempt to send to unsubscribed recipient"})
                with state.lock:
                    sid = f"SM{len(state.twilio_messages):032x}"
                    message = {"sid": sid, "status": "queued", "to": phone, "from": form.get("From"),
                               "body": form.get("Body"), "direction": "outbound-api",
                               "date_created": format_datetime(datetime.now(timezone.utc), usegmt=False)}
                    state.twilio_messages.append(message)
                state.take(f"{phone}|{form.get('Body')}", phone)  # Twilio keeps no id of ours
                state.stall()
                self._answer(201, message)

            def _aliyun(self, body: bytes) -> None:
                from notify.aliyun import aliyun_signature

                form = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
                signature = form.pop("Signature", "")
                if aliyun_signature(form, state.aliyun_secret) != signature:
                    return self._answer(400, {"Code": "SignatureDoesNotMatch", "Message": "bad signature"})
                if state.account_refusal:
                    return self._answer(200, {"Code": state.account_refusal, "Message": "refused"})
                if form.get("Action") == "QuerySendDetails":
                    return self._aliyun_details(form)
                if form.get("Action") != "SendBatchSms":
                    return self._answer(400, {"Code": "InvalidAction.NotFound", "Message": "no such action"})
                with state.lock:
                    if state.aliyun_throttled > 0:
                        state.aliyun_throttled -= 1
                        return self._answer(200, {"Code": "isv.BUSINESS_LIMIT_CONTROL", "Message": "throttled"})
                (number,) = json.loads(form["PhoneNumberJson"])
                phone = "+86" + number if not number.startswith("00") else "+" + number[2:]
                json.loads(form["TemplateParamJson"])
                if phone in state.invalid_numbers:
                    return self._answer(200, {"Code": "isv.MOBILE_NUMBER_ILLEGAL", "Message": "illegal number"})
                if phone in state.opted_out_numbers:
                    return self._answer(200, {"Code": "isv.BLACK_KEY_CONTROL_LIMIT", "Message": "blacklisted"})
                key = form.get("OutId") or f"ali-{len(state.deliveries)}"
                if state.take(key, phone):
                    with state.lock:
                        state.raw_requests.append({"path": self.path, "form": form})
                        state.aliyun_details.append({"PhoneNum": number, "OutId": key, "SendStatus": 3,
                                                     "SendDate": datetime.now(timezone.utc).strftime("%Y%m%d")})
                state.stall()
                self._answer(200, {"Code": "OK", "BizId": f"biz-{key[:12]}", "RequestId": "r"})

            def _aliyun_details(self, form: dict[str, str]) -> None:
                with state.lock:
                    # the loopback keeps UTC days; Aliyun's are China days: a lookup asks each day since
                    found = [d for d in state.aliyun_details if d["PhoneNum"] == form.get("PhoneNumber")]
                self._answer(200, {"Code": "OK", "TotalCount": len(found),
                                   "SmsSendDetailDTOs": {"SmsSendDetailDTO": found}, "RequestId": "r"})

        super().__init__(Handler, "127.0.0.1", port, "sms-gateway")
