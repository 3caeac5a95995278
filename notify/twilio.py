"""Twilio's Messages API: ``POST {base_url}/2010-04-01/Accounts/{AccountSid}/Messages.json``
(form ``To``, ``From``, ``Body``; basic auth ``$TWILIO_ACCOUNT_SID`` / ``$TWILIO_AUTH_TOKEN``);
error 21211/21614 → invalid number, 21610 → opted out; 401 / 20003 and the other codes of
:attr:`TwilioProvider.ACCOUNT` refuse the account. Twilio has no idempotency key for this call:
what may have reached it is looked up in its Messages list (ListMessage, by ``To`` and ``From``,
matched on body and ``date_created``), never sent again blindly."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

from kernel.secrets import Secrets
from notify.base import Message, MissingCredentials, SmsSettings, Verdict, json_body

if TYPE_CHECKING:
    import httpx


class TwilioProvider:
    name = "twilio"
    INVALID_NUMBER = {21211, 21614}
    OPTED_OUT = {21610}

    def __init__(self, sms: SmsSettings) -> None:
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
        data = json_body(response)
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
        for item in json_body(response).get("messages") or []:
            try:
                created = parsedate_to_datetime(str(item.get("date_created")))
            except (TypeError, ValueError):
                return None, None
            if item.get("body") == message.body and created >= since:
                return True, str(item.get("sid") or "") or None
        return False, None
