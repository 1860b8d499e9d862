"""RFC 3161 time-stamps on C2PA signatures: the time-stamp authority (TSA) a user names, and
what swapd does when it does not answer.

A manifest signed without a time-stamp stays a mark after its signer's certificate expires,
but nothing proves the signature is older than that: validators call it expired. With
``[merge] c2pa_timestamp_url`` (or ``swapd merge --c2pa-timestamp-url``) each signature
carries a token from that authority (the C2PA library asks it over HTTP: a hash of the
signature goes out, nothing of the picture), and a validator that trusts the TSA keeps the
manifest valid after the certificate expires.

A time-stamp is not a mark, so an authority that does not answer never stops a merge: the
file is signed without one, said once in the log, and the authority is asked again after
:data:`RETRY_AFTER_S` (a public TSA that is down or refusing is not asked for every frame of a
sequence). A URL that is not ``http(s)://host...`` is refused at start.
"""

from __future__ import annotations

import logging
import threading
import time
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

RETRY_AFTER_S = 300.0
_down_until: dict[str, float] = {}  # url -> monotonic time it is asked again
_lock = threading.Lock()


class TimeStampUrlError(ValueError):
    """A time-stamp authority's URL that cannot be one (the message names where it was
    given)."""


def checked_url(url: str | None, given_as: str = "[merge] c2pa_timestamp_url") -> str | None:
    """``url`` stripped, None when empty; a TimeStampUrlError naming ``given_as`` when it is
    not an http or https URL with a host."""
    if url is None or not url.strip():
        return None
    url = url.strip()
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises for a port that is not a number)
    except ValueError as exc:
        raise TimeStampUrlError(f"{given_as}: {url!r} is not a URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TimeStampUrlError(f"{given_as}: {url!r} is not an http:// or https:// URL of a "
                                "time-stamp authority (RFC 3161)")
    return url


def asking(url: str | None) -> bool:
    """Whether to ask ``url`` for a time-stamp now: one is set, and it has not failed within
    :data:`RETRY_AFTER_S`."""
    if url is None:
        return False
    with _lock:
        return time.monotonic() >= _down_until.get(url, 0.0)


def failed(url: str, reason: object, where: str) -> None:
    """``url`` did not give a time-stamp (``where``: "at start", "for NAME"): not asked
    again for a while; said
    once for each outage (the first failure after it answered)."""
    with _lock:
        first = url not in _down_until
        _down_until[url] = time.monotonic() + RETRY_AFTER_S
    if first:
        text = " ".join(str(reason).split())[:300]
        log.warning("the time-stamp authority %s gave no time-stamp %s (%s): merged files "
                    "are signed without one until it answers (still marked; validators will "
                    "call such a signature expired once its certificate expires); asked again "
                    "in %.0f s", url, where, text, RETRY_AFTER_S)


def answered(url: str) -> None:
    """``url`` gave a time-stamp: a later failure is said again."""
    with _lock:
        if _down_until.pop(url, None) is not None:
            log.info("the time-stamp authority %s answers again", url)
