"""``LITHO_COPILOT_QUEUE``: the copilot as the template service wires it
(``services.template._app``, a real worker process), with one worker and
room for one waiting request. While a slow template holds the worker and a
second request waits, a third is refused at once with a ResourceExhausted
(the gateway's 429) that names the setting; once the worker is free again,
requests work."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from litho.docstore import open_document_store
from litho.errors import InvalidArgument, ResourceExhausted
from litho.service import Host
from services.gateway._problems import from_error
from services.template._app import _copilot
from services.template._lang import Engine, LangExpander
from services.template._model import Limits, Spec
from services.template._service import Templates
from services.template._settings import TemplateSettings
from services.template._store import TemplateRepository

HTML = '<body style="background: #ffffff"><h1 style="color: #111827">{{ title }}</h1></body>'
#: The standard library's HTML parser is quadratic in unclosed start tags:
#: this holds the worker until the work time-out.
SLOW = "<body>" + "<a " * 80_000
PROMPT = "make a dark mode version"


async def test_a_full_copilot_queue_is_a_429_naming_the_setting(tmp_path: Path) -> None:
    settings = TemplateSettings(data_dir=tmp_path, copilot_workers=1, copilot_queue=1,
                                copilot_work_timeout=3.0)
    store = await open_document_store(f"sqlite:///{tmp_path}/t.db", "litho")
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(store.close)
        repo = TemplateRepository(store, version_cache_size=0)
        await repo.prepare()
        limits = Limits(max_html_bytes=512 * 1024, max_dimension=5000,
                        max_variables_bytes=64 * 1024, max_output_bytes=1024 * 1024)
        templates = Templates(repo, LangExpander(Engine()), limits, max_pattern_input=10_000,
                              expand_timeout=5.0)
        host = cast(Host[TemplateSettings], SimpleNamespace(settings=settings, stack=stack))
        copilot = await _copilot(host, store, templates, limits)
        slow = await templates.create("tenant-a", Spec(name="slow", html=SLOW, width=100,
                                                       height=100))
        card = await templates.create("tenant-a", Spec(name="card", html=HTML, width=1200,
                                                       height=630))

        holding = asyncio.create_task(copilot.plan("tenant-a", slow.id, PROMPT, ""))
        await asyncio.sleep(1.0)  # it holds the only worker (for 3 s, once started)
        waiting = asyncio.create_task(copilot.plan("tenant-a", card.id, PROMPT, ""))
        await asyncio.sleep(0.3)  # it waits: the one place in the queue
        assert not holding.done() and not waiting.done()

        with pytest.raises(ResourceExhausted, match="LITHO_COPILOT_QUEUE") as refused:
            await copilot.plan("tenant-a", card.id, PROMPT, "")
        answer = from_error(refused.value)
        assert answer.status == 429 and answer.headers["Retry-After"] == "1"

        with pytest.raises(InvalidArgument, match="LITHO_COPILOT_WORK_TIMEOUT"):
            await holding
        assert any(s.operation is not None for s in (await waiting).steps)
        # The queue is free again: the next request is planned.
        planned = await copilot.plan("tenant-a", card.id, PROMPT, "")
        assert any(s.operation is not None for s in planned.steps)
