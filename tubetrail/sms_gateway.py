"""A loopback SMS gateway that answers like the providers, for the tests and the demo: the
generic webhook (``POST /messages``, honouring ``Idempotency-Key``), Twilio's Messages API
(``POST /2010-04-01/Accounts/{sid}/Messages.json``, form-encoded, basic auth) and Aliyun's
SendBatchSms (``POST /``, signature checked with ``aliyun_secret``). It can answer
429 and 500 on chosen requests, slow down, and refuse numbers as invalid or opted out.

It keeps what it delivered: ``deliveries`` (message key → phone; a key seen again is a
duplicate suppressed, counted in ``duplicates``) and, for Twilio, every raw request so tests
can validate them against Twilio's OpenAPI description."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs

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
    lock: threading.Lock = field(default_factory=threading.Lock)

    def per_phone(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for phone in self.deliveries.values():
            counts[phone] = counts.get(phone, 0) + 1
        return counts


class LoopbackGateway(LoopbackServer):
    def __init__(self, port: int = 0, *, fail_statuses: Iterable[int] = (), delay_seconds: float = 0.0,
                 invalid_numbers: Iterable[str] = (), opted_out_numbers: Iterable[str] = (),
                 aliyun_throttled: int = 0) -> None:
        self.state = GatewayState(list(fail_statuses), delay_seconds, set(invalid_numbers), set(opted_out_numbers),
                                  aliyun_throttled=aliyun_throttled)
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

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if state.delay_seconds:
                    time.sleep(state.delay_seconds)
                with state.lock:
                    state.requests += 1
                    if state.fail_statuses:
                        status = state.fail_statuses.pop(0)
                        self._answer(status, {"error": "try later"}, {"Retry-After": "0"} if status == 429 else None)
                        return
                if self.path == "/messages":
                    self._webhook(body)
                elif self.path.startswith("/2010-04-01/Accounts/") and self.path.endswith("/Messages.json"):
                    self._twilio(body)
                elif self.path == "/":
                    self._aliyun(body)
                else:
                    self._answer(404, {"error": "not found"})

            def _webhook(self, body: bytes) -> None:
                data = json.loads(body or b"{}")
                phone, key = data.get("to", ""), self.headers.get("Idempotency-Key") or data.get("id")
                if phone in state.invalid_numbers:
                    return self._answer(400, {"error": "invalid_number"})
                if phone in state.opted_out_numbers:
                    return self._answer(400, {"error": "opted_out"})
                with state.lock:
                    if key in state.deliveries:
                        state.duplicates += 1
                    state.deliveries[key] = phone
                self._answer(201, {"id": f"wh-{key}"})

            def _twilio(self, body: bytes) -> None:
                form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
                with state.lock:
                    state.raw_requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                auth = self.headers.get("Authorization", "")
                sid = self.path.split("/")[3]
                if not auth.startswith("Basic ") or not base64.b64decode(auth[6:]).decode().startswith(f"{sid}:"):
                    return self._answer(401, {"code": 20003, "message": "Authenticate"})
                phone = form.get("To", "")
                if phone in state.invalid_numbers:
                    return self._answer(400, {"code": 21211, "message": "Invalid 'To' Phone Number"})
                if phone in state.opted_out_numbers:
                    return self._answer(400, {"code": 21610, "message": "Attempt to send to unsubscribed recipient"})
                with state.lock:
                    key = f"SM{len(state.deliveries):032x}"
                    state.deliveries[key] = phone
                self._answer(201, {"sid": key, "status": "queued", "to": phone, "body": form.get("Body")})

            def _aliyun(self, body: bytes) -> None:
                from reporting.sms import aliyun_signature

                form = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
                signature = form.pop("Signature", "")
                if form.get("Action") != "SendBatchSms" or aliyun_signature(form, state.aliyun_secret) != signature:
                    return self._answer(400, {"Code": "SignatureDoesNotMatch", "Message": "bad signature"})
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
                with state.lock:
                    key = form.get("OutId") or f"ali-{len(state.deliveries)}"
                    if key in state.deliveries:
                        state.duplicates += 1
                    state.deliveries[key] = phone
                    state.raw_requests.append({"path": self.path, "form": form})
                self._answer(200, {"Code": "OK", "BizId": f"biz-{key[:12]}", "RequestId": "r"})

        super().__init__(Handler, "127.0.0.1", port, "sms-gateway")
