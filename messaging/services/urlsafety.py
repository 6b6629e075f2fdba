"""SSRF guard for URLs the server itself calls (integrators' webhook endpoints)."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings
from django.utils.translation import gettext_lazy as _

from crm.errors import DomainError


class UnsafeUrl(DomainError):
    code = "unsafe_url"


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        # ::ffff:127.0.0.1 reaches 127.0.0.1: judge the IPv4 address it maps.
        ip = ip.ipv4_mapped
    return ip.is_global and not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def url_safety_check(*, url: str) -> None:
    """Refuse a URL that is not https or whose host resolves to any non-public address.

    Run at registration and again before every delivery: DNS may point elsewhere later.
    """
    parts = urlsplit(url)
    allowed = {"https", "http"} if settings.MESSAGING_WEBHOOK_ALLOW_HTTP else {"https"}
    if parts.scheme not in allowed:
        raise UnsafeUrl(_("Only https URLs are allowed."), field="url")
    host = parts.hostname
    if not host:
        raise UnsafeUrl(_("The URL has no host."), field="url")
    if settings.MESSAGING_WEBHOOK_ALLOW_PRIVATE:
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:
        raise UnsafeUrl(
            _("The host %(host)s cannot be resolved.") % {"host": host}, field="url"
        ) from exc
    for info in infos:
        if not _is_public(str(info[4][0])):
            raise UnsafeUrl(
                _("The host %(host)s resolves to a private or reserved address.") % {"host": host},
                field="url",
            )
