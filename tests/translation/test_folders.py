"""Folder and dataset jobs: two processes equal one, resume, atomic writes, datasets in and out."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cut_hf import CUTGenerator, translate
from cut_hf.translation import folders as batch_translate
from cut_hf.translation.folders import Decoded, partial_path, size_batches, write_atomic
from cut_hf.cli.translate import main

RNG = np.random.default_rng(0)
# Nested folders, odd sizes, a size shared by several files (batched), one unreadable file.
FILES = {"a.png": (21, 14), "b.jpg": (21, 14), "sub/c.png": (13, 9), "sub/d.png": (30, 17),
         "sub/deeper/e.png": (21, 14), "sub/deeper/f.png": (8, 8), "g.png": (33, 31)}


def _rgb(width: int, height: int) -> Image.Image:
    return Image.fromarray(RNG.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    CUTGenerator(ngf=4, n_blocks=1).save_pretrained(path)
    return path


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "in"
    for name, size in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        _rgb(*size).save(root / name)
    (root / "sub" / "bad.png").write_text("not an image")
    return root


def _outputs(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _launched_main(argv: list[str]) -> None:
    """main() in a process of accelerate's debug_launcher (forked from this one: reset the state
    this process's own jobs left in Accelerate's process-wide singleton)."""
    from accelerate.state import PartialState

    PartialState._reset_state()
    assert main(argv) == 0
    assert PartialState().num_processes == 2


def _two_processes(argv: list[str], log: Path | None = None, monkeypatch: pytest.MonkeyPatch | None = None) -> None:
    """Run main(argv) in two CPU processes (gloo); with ``log``, each written file is logged with its pid."""
    from accelerate import debug_launcher

    if log is not None:
        real = batch_translate.write_atomic

        def logged(image: Image.Image, target: Path, ext: str | None = None) -> None:
            real(image, target, ext)
            with open(log, "a") as f:  # appends of one short line do not interleave
                f.write(f"{os.getpid()} {target}\n")

        monkeypatch.setattr(batch_translate, "write_atomic", logged)
    debug_launcher(_launched_main, args=(argv,), num_processes=2)


def test_two_processes_write_exactly_the_single_process_outputs(model_dir, folder, tmp_path, capsys,
                                                                 monkeypatch) -> None:
    common = ["--model", str(model_dir), "--input", str(folder), "--batch-size", "2"]
    assert main([*common, "--output", str(tmp_path / "one"), "--num-workers", "0"]) == 0
    assert "translated 7 of 8 image(s)" in capsys.readouterr().out
    log = tmp_path / "writes.log"
    _two_processes([*common, "--output", str(tmp_path / "two"), "--num-workers", "1"], log, monkeypatch)
    writes = [line.split(" ", 1) for line in log.read_text().splitlines()]
    assert len(writes) == len({target for _, target in writes}) == 7  # every input written exactly once
    assert len({pid for pid, _ in writes}) == 2  # by two processes
    one, two = _outputs(tmp_path / "one"), _outputs(tmp_path / "two")
    assert sorted(one) == ["a.png", "b.png", "g.png", "sub/c.png", "sub/d.png", "sub/deeper/e.png", "sub/deeper/f.png"]
    assert one == two  # byte for byte: same pixels, each input written once
    assert not list((tmp_path / "two").rglob("*.partial"))


def test_rerun_recomputes_only_missing_outputs(model_dir, folder, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    argv = ["--model", str(model_dir), "--input", str(folder), "--output", str(out), "--num-workers", "0"]
    assert main(argv) == 0
    first = _outputs(out)
    for p in out.rglob("*.png"):
        os.utime(p, (1_000_000, 1_000_000))  # an old mtime: any rewrite shows
    (out / "a.png").unlink()
    (out / "sub" / "deeper" / "e.png").unlink()
    capsys.readouterr()
    assert main(argv) == 0
    captured = capsys.readouterr()
    summary = captured.out
    assert "translated 2 of 8 image(s)" in summary and "5 already there, 1 unreadable, 0 failed" in summary
    # The per-file lines use the summary's words: one "unreadable:" line for the one unreadable file.
    words = [line.split(":")[0] for line in captured.err.splitlines()]
    assert [w for w in words if w in ("unreadable", "failed", "skipped")] == ["unreadable"]
    assert _outputs(out) == first
    rewritten = {p.relative_to(out).as_posix() for p in out.rglob("*.png") if p.stat().st_mtime != 1_000_000}
    assert rewritten == {"a.png", "sub/deeper/e.png"}

    assert main(argv) == 0  # everything there: nothing to do is success
    assert main([*argv, "--overwrite"]) == 0
    assert all(p.stat().st_mtime != 1_000_000 for p in out.rglob("*.png"))


def test_a_killed_run_leaves_nothing_a_rerun_keeps(model_dir, folder, tmp_path, monkeypatch) -> None:
    out = tmp_path / "out"
    argv = ["--model", str(model_dir), "--input", str(folder), "--output", str(out), "--num-workers", "0"]
    assert main(argv) == 0
    whole = _outputs(out)

    # A write killed half-way: nothing under the real name, and the partial file is gone too.
    real_save = Image.Image.save

    def killed(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(_rgb(8, 8), tmp_path / "k" / "x.png")
    assert not (tmp_path / "k" / "x.png").exists() and not partial_path(tmp_path / "k" / "x.png").exists()
    monkeypatch.setattr(Image.Image, "save", real_save)

    # What a run killed by SIGKILL leaves: a partial file beside a missing output, and a truncated
    # output from a writer that was not atomic. A rerun redoes both and removes the partial file.
    (out / "sub" / "c.png").unlink()
    partial_path(out / "sub" / "c.png").write_bytes(whole["sub/c.png"][:40])
    (out / "g.png").write_bytes(whole["g.png"][: len(whole["g.png"]) // 2])
    assert main(argv) == 0
    assert _outputs(out) == whole


def test_size_batches_group_equal_sizes_within_a_bounded_buffer() -> None:
    shapes = [(8, 8), (12, 8), (8, 8), (40, 40), (12, 8), (8, 8), (16, 4), (8, 8), (12, 8)]
    items = [Decoded(i, torch.zeros(3, h, w, dtype=torch.uint8)) for i, (h, w) in enumerate(shapes)]
    items.insert(2, Decoded(99, error="unreadable"))
    batches = list(size_batches(iter(items), batch_size=2, alone=lambda h, w: h * w > 1000, buffered=3))
    keys = sorted(item.key for batch in batches for item in batch)
    assert keys == sorted([*range(len(shapes)), 99])  # every input once
    for batch in batches:
        assert len(batch) <= 2
        assert len({None if i.image is None else tuple(i.image.shape) for i in batch}) == 1
    assert [item.key for item in batches[0]] == [99]  # errors pass straight through
    assert any(len(b) == 1 and b[0].key == 3 for b in batches)  # the big one runs alone
    assert sum(len(b) == 2 for b in batches) >= 3  # equal sizes found each other


def test_dataset_folder_in_dataset_folder_out(model_dir, tmp_path, capsys) -> None:
    datasets = pytest.importorskip("datasets")
    images = [_rgb(21, 14), _rgb(13, 9), None, _rgb(21, 14), _rgb(8, 12)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64"),
                                  "name": datasets.Value("string")})
    ds = datasets.Dataset.from_dict({"image": images, "label": [3, 1, 4, 1, 5], "name": list("abcde")},
                                    features=features)
    ds.save_to_disk(str(tmp_path / "ds"))
    argv = ["--model", str(model_dir), "--dataset", str(tmp_path / "ds"), "--num-workers", "0"]
    assert main([*argv, "--output-dataset", str(tmp_path / "one")]) == 0
    summary = capsys.readouterr().out
    assert "translated 4 of 5 image(s)" in summary and "1 unreadable" in summary
    one = datasets.load_from_disk(str(tmp_path / "one"))
    assert one.column_names == ["image", "label", "name", "image_translated"] and len(one) == 5
    assert one["label"] == [3, 1, 4, 1, 5] and one["name"] == list("abcde")
    generator = CUTGenerator.from_pretrained(model_dir)
    for row, image in zip(one, images):
        if image is None:
            assert row["image_translated"] is None
            continue
        np.testing.assert_array_equal(np.asarray(row["image_translated"]), np.asarray(translate(generator, image)))

    _two_processes([*argv, "--output-dataset", str(tmp_path / "two"), "--output-column", "zebra"])
    two = datasets.load_from_disk(str(tmp_path / "two"))
    assert two.column_names == ["image", "label", "name", "zebra"] and two["name"] == list("abcde")
    for a, b in zip(one["image_translated"], two["zebra"]):
        assert (a is None and b is None) or np.array_equal(np.asarray(a), np.asarray(b))
    assert not (tmp_path / ".two.shards").exists()


def test_dataset_command_line_errors(model_dir, tmp_path, capsys) -> None:
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"photo": [_rgb(8, 8)]}, features=datasets.Features({"photo": datasets.Image()})
                               ).save_to_disk(str(tmp_path / "ds"))
    base = ["--model", str(model_dir), "--dataset", str(tmp_path / "ds")]
    assert main([*base, "--output-dataset", str(tmp_path / "o")]) == 2  # no column "image"
    assert "no column 'image'" in capsys.readouterr().err
    assert main(base) == 2
    assert "--output-dataset" in capsys.readouterr().err
    assert main([*base, "--input", str(tmp_path), "--output", str(tmp_path / "o")]) == 2
    assert "either --input" in capsys.readouterr().err
    assert main(["--model", str(model_dir), "--dataset", str(tmp_path / "nowhere"), "--output-dataset", "x"]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_push_to_hub_only_stages_and_cleans_up(model_dir, tmp_path, monkeypatch, capsys) -> None:
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"image": [_rgb(8, 8), _rgb(12, 8)], "id": [7, 8]},
                               features=datasets.Features({"image": datasets.Image(), "id": datasets.Value("int64")})
                               ).save_to_disk(str(tmp_path / "ds"))
    pushed = []
    monkeypatch.setattr(datasets.Dataset, "push_to_hub",
                        lambda self, repo_id, **kw: pushed.append((repo_id, self.column_names, len(self))))
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    argv = ["--model", str(model_dir), "--dataset", str(tmp_path / "ds"), "--push-to-hub", "me/zebras"]
    assert main([*argv, "--num-workers", "0"]) == 0
    assert pushed == [("me/zebras", ["image", "id", "image_translated"], 2)]
    assert "translated 2 of 2 image(s) into me/zebras" in capsys.readouterr().out
    assert list((tmp_path / "tmp").iterdir()) == []  # the staging folder is gone


def test_streamed_dataset_in_dataset_folder_out(model_dir, tmp_path) -> None:
    """--streaming reads rows as they come (no download first); one or two processes, every row once."""
    datasets = pytest.importorskip("datasets")
    images = [_rgb(21, 14), _rgb(13, 9), _rgb(21, 14), _rgb(8, 12), _rgb(13, 9)]
    ds = datasets.Dataset.from_dict({"image": images, "id": list(range(5))},
                                    features=datasets.Features({"image": datasets.Image(), "id": datasets.Value("int64")}))
    (tmp_path / "data").mkdir()
    ds.to_parquet(str(tmp_path / "data" / "train-00000.parquet"))
    argv = ["--model", str(model_dir), "--dataset", str(tmp_path / "data"), "--streaming", "--num-workers", "0"]
    assert main([*argv, "--output-dataset", str(tmp_path / "one")]) == 0
    _two_processes([*argv, "--output-dataset", str(tmp_path / "two")])
    generator = CUTGenerator.from_pretrained(model_dir)
    for name in ("one", "two"):
        out = datasets.load_from_disk(str(tmp_path / name))
        assert out.column_names == ["image", "id", "image_translated"] and sorted(out["id"]) == list(range(5))
        for row in out:
            expected = np.asarray(translate(generator, images[row["id"]]))
            np.testing.assert_array_equal(np.asarray(row["image_translated"]), expected)
            np.testing.assert_array_equal(np.asarray(row["image"]), np.asarray(images[row["id"]]))
