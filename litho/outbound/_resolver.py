"""Vetting at connect time: a resolver and a socket factory for aiohttp's connector.

The resolver refuses a host name when ANY address it resolves to is not
allowed, so the addresses checked are the addresses the connector then uses
(no second lookup to rebind). The socket factory re-checks the exact socket
address of every connection attempt, IP literals included, which aiohttp
never sends through the resolver.
"""

from __future__ import annotations

import socket
from typing import NoReturn

from aiohttp import AddrInfoType
from aiohttp.abc import AbstractResolver, ResolveResult

from litho.outbound._policy import AllowList, is_public_address, log_denial


class DeniedAddress(OSError):
    """Raised inside aiohttp's connector; an OSError so aiohttp wraps it as a
    connection error, which the guard turns back into ``OutboundDenied``."""


def _refuse(reason: str, host: str, port: int) -> NoReturn:
    log_denial(reason, host, port)
    raise DeniedAddress(reason)


class VettingResolver(AbstractResolver):
    """Wraps another resolver and refuses names that reach a denied address."""

    def __init__(self, upstream: AbstractResolver, allow: AllowList, *, owns: bool) -> None:
        self._upstream = upstream
        self._allow = allow
        self._owns = owns

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._upstream.resolve(host, port, family)
        for result in results:
            if not is_public_address(result["host"], result["port"], self._allow):
                _refuse(f"{host} resolves to denied address {result['host']}", host, port)
        return results

    async def close(self) -> None:
        if self._owns:
            await self._upstream.close()


class SocketGate:
    """A ``socket_factory`` for ``TCPConnector`` that refuses denied socket addresses."""

    def __init__(self, allow: AllowList) -> None:
        self._allow = allow

    def __call__(self, addr_info: AddrInfoType) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        ip, port = str(sockaddr[0]), int(sockaddr[1])
        if not is_public_address(ip, port, self._allow):
            _refuse(f"connection to denied address {ip}", ip, port)
        return socket.socket(family=family, type=type_, proto=proto)
