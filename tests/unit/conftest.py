"""Shared fixtures of the unit tests: one real Chromium (the capture, GIF
and PDF modules), and one nx-27017 with two stores on the same data, as two
replicas of a service have (the rate limiter, the template cap)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, async_playwright

from litho.docstore import DocumentStore
from services.renderer import _chromium
from tests.support.nx27017 import Nx27017, peer_stores, start_nx27017


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(
            executable_path=_chromium.executable_path(""), args=_chromium.launch_args()
        )
        yield launched
        await launched.close()


@pytest.fixture(scope="session")
def nx27017(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nx27017]:
    server = start_nx27017(tmp_path_factory.mktemp("nx27017"))
    try:
        yield server
    finally:
        server.stop()


@pytest_asyncio.fixture(params=["sqlite", "nx27017"])
async def peers(request: pytest.FixtureRequest,
                tmp_path: Path) -> AsyncIterator[list[DocumentStore]]:
    """Two stores on the same data, each with its own connection, as two
    replicas of a service have: SQLite files, or a fresh nx-27017 database."""
    server = request.getfixturevalue("nx27017") if request.param == "nx27017" else None
    async with peer_stores(request.param, tmp_path, server, prefix="peers") as stores:
        yield stores
