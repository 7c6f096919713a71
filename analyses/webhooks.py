"""What a webhook is here: where it may point, how its body is signed, its secret.

A URL is checked when it is registered and again before every delivery, each redirect's target included: the
host is resolved first and every address it resolves to is checked (a name that resolves to a private address
is refused like the address), and the delivery then connects to the address checked, not to a second lookup
(a name that changed its answer in between, DNS rebinding, cannot move it). Private, loopback, link-local (the
cloud metadata address 169.254.169.254 among them), multicast and reserved addresses are refused unless
`WEBHOOK_ALLOWED_HOSTS` lists the host, the address or a network holding it.

A body is signed the way well-known webhook providers sign theirs: HMAC-SHA256, keyed by the endpoint's secret,
over `<timestamp>.<body>`, sent as `X-Emgapi-Signature: t=<timestamp>,v1=<hex digest>`.
"""

import hashlib
import hmac
import ipaddress
import secrets
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

SIGNATURE_HEADER = "X-Emgapi-Signature"
DELIVERY_HEADER = "X-Emgapi-Delivery"
EVENT_HEADER = "X-Emgapi-Event"
SECRET_PREFIX = "whsec_"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class WebhookUrlRefused(ValueError):
    """A URL a webhook may not be sent to; the message says why, for the API's answer and the delivery log."""


@dataclass(frozen=True)
class CheckedUrl:
    """A URL that may be posted to, and the address to connect to for it (its host as resolved and checked)."""

    url: str
    host: str
    address: str


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value for `body` sent at `timestamp` (Unix seconds)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def check_url(url: str) -> CheckedUrl:
    """`url` with the address to post it to, or WebhookUrlRefused saying why not."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise WebhookUrlRefused("Only http and https URLs are accepted.")
    if parts.username or parts.password:
        raise WebhookUrlRefused("A URL with a user name or password is not accepted: sign with the secret.")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise WebhookUrlRefused("The URL has no host.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise WebhookUrlRefused("The URL's port is not a number from 0 to 65535.") from None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise WebhookUrlRefused(f"Its host {host} does not resolve ({exc}).") from None
    addresses = sorted({_address(str(info[4][0])) for info in infos}, key=str)
    if not addresses:
        raise WebhookUrlRefused(f"Its host {host} does not resolve.")
    for address in addresses:
        reason = _refusal(address)
        if reason and not _allowed(host, address):
            what = host if host == str(address) else f"{host} resolves to {address}, which"
            raise WebhookUrlRefused(
                f"{what} is {reason}: refused (an operator may list it in WEBHOOK_ALLOWED_HOSTS)."
            )
    return CheckedUrl(url=url, host=host, address=str(addresses[0]))


def _address(text: str) -> Address:
    address = ipaddress.ip_address(text.split("%", 1)[0])  # an IPv6 scope ("fe80::1%eth0") is no part of it
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1
    return address


def _refusal(address: Address) -> str:
    """Why a webhook may not go to `address`, or "" if it may."""
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address (the cloud metadata service among them)"
    if address.is_private:
        return "a private address"
    if address.is_multicast or address.is_reserved or address.is_unspecified:
        return "not a unicast public address"
    return ""


def _allowed(host: str, address: Address) -> bool:
    for entry in settings.WEBHOOK_ALLOWED_HOSTS:
        entry = entry.strip().lower()
        if not entry:
            continue
        if entry == host:
            return True
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue  # a host name, not a network
    return False
