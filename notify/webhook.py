"""The generic webhook: ``POST {base_url}/messages`` with JSON ``{id, to, from, text}`` and the
header ``Idempotency-Key: <message id>`` (a second guard: the outbox's claims already send each
message once); ``GET {base_url}/messages/{id}`` answers 200 for a message it took and 404
``{"error": "not_found"}`` for one it did not (anything else: it cannot tell). 401 / 403 refuse
the account; ``{"error": "opted_out"}`` is an opt-out."""

from __future__ import annotations

from typing import TYPE_CHECKING

from notify.base import Message, SmsSettings, Verdict, json_body

if TYPE_CHECKING:
    import httpx


class WebhookProvider:
    name = "webhook"

    def __init__(self, sms: SmsSettings) -> None:
        self.sms = sms

    def request(self, client: httpx.Client, message: Message) -> httpx.Response:
        return client.post(f"{self.sms.base_url.rstrip('/')}/messages",
                           json={"id": message.message_id, "to": message.phone, "from": self.sms.sender,
                                 "text": message.body},
                           headers={"Idempotency-Key": message.message_id})

    def verdict(self, response: httpx.Response) -> Verdict:
        data = json_body(response)
        if response.is_success:
            return "sent", str(data.get("id") or ""), None, False
        if response.status_code in (401, 403):
            return "account", None, f"webhook HTTP {response.status_code}", False
        error = str(data.get("error") or f"HTTP {response.status_code}")
        return "failed", None, error, error == "opted_out"

    def lookup(self, client: httpx.Client, message: Message) -> tuple[bool | None, str | None]:
        """``GET /messages/{id}``: 200 → taken, 404 ``{"error": "not_found"}`` → not taken, else unknown."""
        response = client.get(f"{self.sms.base_url.rstrip('/')}/messages/{message.message_id}")
        data = json_body(response)
        if response.status_code == 200:
            return True, str(data.get("id") or "") or None
        if response.status_code == 404 and data.get("error") == "not_found":
            return False, None
        return None, None
