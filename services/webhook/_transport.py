"""The deliverer's Transport over the outbound guard: every target is
vetted (scheme, address, allow-list) at each attempt, as every server-side
fetch in Litho is."""

from __future__ import annotations

from collections.abc import Mapping

from litho.errors import OutboundDenied, OutboundError, OutboundTimeout
from litho.outbound import OutboundGuard
from services.webhook._deliverer import Answer, SendFailed


class GuardTransport:
    """A 3xx is an answer like any other (a failed attempt, never a second
    request to wherever it points), and only the first ``max_bytes`` of a
    body are read: the status is all that counts."""

    def __init__(self, guard: OutboundGuard, *, timeout: float, max_bytes: int) -> None:
        self._guard = guard
        self._timeout = timeout
        self._max_bytes = max_bytes

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        try:
            result = await self._guard.fetch(url, method="POST", headers=headers, body=body,
                                             max_bytes=self._max_bytes, timeout=self._timeout,
                                             follow_redirects=False, truncate=True)
        except OutboundDenied as exc:
            raise SendFailed(f"the target is not allowed ({exc.message})") from exc
        except OutboundTimeout as exc:
            raise SendFailed(f"no answer within {self._timeout:g} s "
                             "(LITHO_WEBHOOK_TIMEOUT)") from exc
        except OutboundError as exc:
            raise SendFailed(exc.message) from exc
        except (UnicodeError, ValueError) as exc:
            # A host the URL libraries cannot encode (an empty or over-long
            # label): the guard refuses those itself; this is the backstop, so
            # an odd URL is a failed attempt, never a job that breaks.
            raise SendFailed(f"the target URL cannot be used ({type(exc).__name__})") from exc
        return Answer(status=result.status, headers=result.headers)
