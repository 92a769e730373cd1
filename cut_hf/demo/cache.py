"""Keeping the app's disk use flat: uploads and results older than ``--cache-minutes`` go.

Gradio keeps every upload and every result image in its cache folder (``GRADIO_TEMP_DIR``, else
``<tmp>/gradio``), each file in a folder named by its hash, and by default never deletes them: a
public Space fills its disk. Gradio's own cleaning (``gr.Blocks(delete_cache=(frequency, age))``)
deletes this app's files once they are ``age`` seconds old; :func:`delete_cache_setting` turns
``--cache-minutes`` into that pair. It leaves the hash-named folders behind, empty, one per
request: :func:`remove_empty_folders` takes them, on the same schedule, through :func:`sweeper`,
a lifespan for the app's server. Nothing here imports gradio.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

#: Uploads and results are kept this long by default (``python app.py --cache-minutes``).
DEFAULT_CACHE_MINUTES = 60.0
#: Seconds an empty cache folder must have stayed unchanged before it goes (deleting a file changes
#: its folder, so a folder waits this long, not a whole age, after Gradio emptied it). Gradio fills
#: the folders it makes at once.
EMPTY_FOLDER_GRACE = 10.0


def delete_cache_setting(minutes: float) -> tuple[int, int] | None:
    """Gradio's ``delete_cache=(frequency, age)`` in seconds for files older than ``minutes``.

    The cache is checked every quarter of the age, so a file goes between ``age`` and 1.25 x
    ``age`` after it was written. ``minutes <= 0``: None, nothing is deleted while the app runs.
    """
    if minutes <= 0:
        return None
    age = max(1, round(minutes * 60))
    return max(1, age // 4), age


def remove_empty_folders(root: str | os.PathLike, age: float, now: float | None = None) -> list[Path]:
    """Remove the empty folders under ``root`` last changed more than ``age`` seconds ago (deepest
    first, so a folder emptied by that becomes a candidate too, if it is old); returns them.

    A folder changed within ``age`` (one Gradio may be writing into right now) is left alone.
    """
    root, now = Path(root), time.time() if now is None else now
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for folder, _, _ in sorted(os.walk(root), key=lambda entry: -len(entry[0])):
        path = Path(folder)
        if path == root:
            continue
        with contextlib.suppress(OSError):  # not empty, or gone, or changed meanwhile: next time
            if now - path.stat().st_mtime > age and not any(path.iterdir()):
                path.rmdir()
                removed.append(path)
    return removed


def sweeper(root: str | os.PathLike, frequency: float,
            age: float) -> Callable[[Any], contextlib.AbstractAsyncContextManager]:
    """A server lifespan (Gradio's ``launch(app_kwargs={"lifespan": ...})``) that runs
    :func:`remove_empty_folders` on ``root`` every ``frequency`` seconds while the app serves,
    for folders empty and unchanged for :data:`EMPTY_FOLDER_GRACE` (at most ``age``) seconds."""
    grace = min(age, EMPTY_FOLDER_GRACE)

    async def sweep() -> None:
        while True:
            await asyncio.sleep(frequency)
            await asyncio.to_thread(remove_empty_folders, root, grace)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        task = asyncio.create_task(sweep())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return lifespan
