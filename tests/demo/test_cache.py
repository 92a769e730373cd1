"""--cache-minutes: Gradio's cache cleaning gets (frequency, age) from it, an old file goes and a new one
stays, and the empty hash-named folders Gradio leaves behind are removed too (no sleeping: clocks are shifted)."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import datetime, timedelta
from pathlib import Path

from cut_hf.demo.cache import DEFAULT_CACHE_MINUTES, delete_cache_setting, remove_empty_folders, sweeper


def test_cache_minutes_become_gradios_frequency_and_age():
    assert DEFAULT_CACHE_MINUTES == 60
    assert delete_cache_setting(60) == (900, 3600)  # checked every quarter of the age
    assert delete_cache_setting(1) == (15, 60)
    assert delete_cache_setting(0.001) == (1, 1)
    assert delete_cache_setting(0) is None  # kept while serving


def test_gradio_deletes_this_apps_old_files_with_that_setting(tmp_path: Path, monkeypatch):
    """Gradio's own cleaner, run as its schedule runs it, on a Blocks made with our setting: a file of
    the app's older than the age goes, a younger one stays (its clock is moved on instead of waiting)."""
    import gradio as gr
    from gradio import route_utils

    with gr.Blocks(delete_cache=delete_cache_setting(1)) as demo:
        gr.Markdown("x")
    frequency, age = demo.delete_cache
    upload = tmp_path / "abc123" / "upload.png"
    upload.parent.mkdir()
    upload.write_bytes(b"png")
    demo.upload_file_set.add(str(upload))

    class Later(datetime):
        shift = timedelta(0)

        @classmethod
        def now(cls, tz=None):
            return datetime.now(tz) + cls.shift

    monkeypatch.setattr(route_utils, "datetime", Later)
    Later.shift = timedelta(seconds=age - 5)  # younger than the age: kept
    route_utils.delete_files_created_by_app(demo, age)
    assert upload.exists()
    Later.shift = timedelta(seconds=age + frequency)  # by the next check after the age: deleted
    route_utils.delete_files_created_by_app(demo, age)
    assert not upload.exists() and upload.parent.is_dir()  # Gradio leaves the folder


def test_empty_old_folders_go_and_everything_else_stays(tmp_path: Path):
    now = time.time()
    old, fresh, full, nested = (tmp_path / n for n in ("old", "fresh", "full", "a"))
    for d in (old, fresh, full, nested / "b"):
        d.mkdir(parents=True)
    (full / "result.png").write_bytes(b"png")
    for d in (old, full, nested / "b", nested):
        os.utime(d, (now - 100, now - 100))
    removed = remove_empty_folders(tmp_path, age=30, now=now)
    assert sorted(p.name for p in removed) == ["b", "old"]  # "a" changed just now, when "b" went
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "fresh", "full"]
    assert remove_empty_folders(tmp_path / "missing", age=30) == []


def test_sweeper_runs_while_serving_and_stops_with_the_server(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    os.utime(tmp_path / "empty", (time.time() - 100, time.time() - 100))

    async def serve() -> None:
        async with sweeper(tmp_path, frequency=0.01, age=60)(None):
            for _ in range(500):
                await asyncio.sleep(0.01)
                if not (tmp_path / "empty").exists():
                    break

    asyncio.run(serve())
    assert not (tmp_path / "empty").exists()
