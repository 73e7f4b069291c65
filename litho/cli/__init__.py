"""``litho``: a tenant's templates as files in Git, renders and API keys.

The console script calls :func:`main`; :func:`run` is the same for callers
that already run an event loop. Nothing here reads settings or opens a
connection until a command runs.
"""

from litho.cli._main import main, run

__all__ = ["main", "run"]
