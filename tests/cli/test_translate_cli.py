"""cut-hf translate: folders, skipped files, exit codes, one-line model errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cut_hf
from cut_hf import CUTGenerator
from cut_hf.cli.translate import main

RNG = np.random.default_rng(0)


def _rgb(width: int, height: int) -> Image.Image:
    return Image.fromarray(RNG.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model")
    CUTGenerator(ngf=4, n_blocks=1).save_pretrained(path)
    return path


@pytest.fixture
def inputs(tmp_path) -> Path:
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    _rgb(21, 14).save(root / "a.jpg")
    _rgb(21, 14).save(root / "a.png")  # same stem as a.jpg: must not overwrite it
    Image.fromarray(RNG.integers(0, 256, (9, 13), dtype=np.uint8)).save(root / "sub" / "b.png")  # grayscale
    (root / "bad.png").write_text("not an image")
    full = (root / "a.png").read_bytes()
    (root / "cut.png").write_bytes(full[: len(full) // 2])  # truncated
    (root / "notes.txt").write_text("ignored: not an image extension")
    return root


def test_folder_is_translated_with_relative_paths(model_dir, inputs, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code = main(["--model", str(model_dir), "--input", str(inputs), "--output", str(out), "--batch-size", "2"])
    captured = capsys.readouterr()
    assert code == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["a.png", "a_png.png", "sub/b.png"]
    assert Image.open(out / "a.png").size == (21, 14) and Image.open(out / "sub" / "b.png").size == (13, 9)
    assert Image.open(out / "sub" / "b.png").mode == "RGB"
    assert "bad.png" in captured.err and "cut.png" in captured.err and "truncated" in captured.err
    assert "Traceback" not in captured.err
    assert "translated 3 of 5 image(s)" in captured.out and "0 already there, 2 unreadable, 0 failed" in captured.out
    # One vocabulary: the per-file lines say "unreadable" as the summary does (they once said "skipped").
    named = sorted(line.split()[1] for line in captured.err.splitlines() if line.startswith("unreadable: "))
    assert len(named) == 2 and "bad.png" in named[0] and "cut.png" in named[1]

    # The files hold what translate() gives for the same image.
    generator = CUTGenerator.from_pretrained(model_dir)
    expected = np.asarray(cut_hf.translate(generator, inputs / "sub" / "b.png"))
    np.testing.assert_array_equal(np.asarray(Image.open(out / "sub" / "b.png")), expected)


def test_options_size_format_and_train_output_folder(model_dir, inputs, tmp_path) -> None:
    run_dir = tmp_path / "run"  # a train.py output folder keeps the model in generator/
    CUTGenerator.from_pretrained(model_dir).save_pretrained(run_dir / "generator")
    out = tmp_path / "out"
    code = main(["--model", str(run_dir), "--input", str(inputs / "a.png"), "--output", str(out),
                 "--size", "8", "--no-keep-size", "--format", "jpg", "--tile", "128", "--precision", "bf16"])
    assert code == 0
    assert Image.open(out / "a.jpg").size == (12, 8)


def test_big_images_show_a_tile_bar(model_dir, tmp_path, capsys) -> None:
    """A tiled image moves a bar of tiles (a big image must not sit at 0/1 for minutes)."""
    _rgb(400, 320).save(tmp_path / "big.png")
    code = main(["--model", str(model_dir), "--input", str(tmp_path / "big.png"), "--output", str(tmp_path / "o"),
                 "--tile", "128"])
    err = capsys.readouterr().err
    assert code == 0 and "tiles" in err and "/12 " in err  # 400 x 320 in 128 px tiles (32 px overlap): 4 x 3


@pytest.mark.parametrize("native", [False, True])
def test_bf16_on_a_cpu_without_native_bf16_gets_a_note(native, model_dir, inputs, tmp_path, capsys,
                                                        monkeypatch) -> None:
    import cut_hf.perf as perf

    monkeypatch.setattr(perf, "native_bf16", lambda device="cpu": native)
    code = main(["--model", str(model_dir), "--input", str(inputs / "a.png"), "--output", str(tmp_path / "o"),
                 "--precision", "bf16", "--device", "cpu"])
    assert code == 0 and (tmp_path / "o" / "a.png").is_file()  # still translated: a note, not an error
    assert ("no native bf16" in capsys.readouterr().err) is not native


def test_nothing_translated_exits_1(model_dir, inputs, tmp_path, capsys) -> None:
    assert main(["--model", str(model_dir), "--input", str(inputs / "bad.png"), "--output", str(tmp_path / "o")]) == 1
    assert "not an image" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["--model", str(model_dir), "--input", str(empty), "--output", str(tmp_path / "o")]) == 1
    assert "no image or video files" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "{tmp}/missing"], "does not exist"),
        (["--model", "nobody-here/no-such-model"], "no-such-model"),
        (["--input", "{tmp}/nowhere"], "does not exist"),
        (["--precision", "fp16", "--device", "cpu"], "CUDA"),
        (["--format", "xyz"], "cannot write"),
        (["--batch-size", "0"], "batch-size"),
        (["--tile", "10"], "--tile 10 px is too small: tiles must be at least 128 px"),
        (["--tile", "-1"], "--tile -1 px is too small"),
    ],
)
def test_bad_command_lines_exit_2_with_one_line(args, message, model_dir, inputs, tmp_path, capsys, hub_offline):
    argv = {"--model": str(model_dir), "--input": str(inputs), "--output": str(tmp_path / "o")}
    for flag, value in zip(args[::2], args[1::2]):
        argv[flag] = value.format(tmp=tmp_path)
    assert main([x for kv in argv.items() for x in kv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert not (tmp_path / "o").exists()


def test_python_m_entry_point(inputs, tmp_path) -> None:
    """The real process (one start, torch imports are slow on a busy box): `cut-hf translate`
    with an unknown model prints one line, no traceback, and exits 2; main()'s other paths are above."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    bad = subprocess.run(
        [sys.executable, "-m", "cut_hf", "translate", "--model", "nobody-here/no-such-model", "--input",
         str(inputs), "--output", str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=300,
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    assert "no-such-model" in bad.stderr and not (tmp_path / "out").exists()


def test_package_translate_stays_callable_after_importing_the_cli(tiny_generator) -> None:
    import cut_hf.cli.translate as cli  # the command line lives apart from the name `cut_hf.translate`

    assert callable(cut_hf.translate) and cut_hf.translate is cut_hf.translation.pipeline.translate and callable(cli.main)
    assert cut_hf.translate(tiny_generator, _rgb(8, 8)).size == (8, 8)
    from cut_hf import translate

    assert translate(tiny_generator, _rgb(8, 8)).size == (8, 8)


def test_an_onnx_file_is_a_model(tmp_path):
    """``--model model.onnx``: the exported graph translates with no model code (issue 13)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from cut_hf import CUTGenerator, load_generator, translate
    from cut_hf.translation.export import export_onnx

    torch.manual_seed(0)
    generator = CUTGenerator(ngf=4, n_blocks=1).eval()
    onnx_path = export_onnx(generator, tmp_path / "g.onnx", example_size=(32, 32))
    images = tmp_path / "in"
    images.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (36, 44, 3), dtype=np.uint8)).save(images / "a.png")
    assert main(["--model", str(onnx_path), "--input", str(images), "--output", str(tmp_path / "out")]) == 0
    ours = np.asarray(Image.open(tmp_path / "out" / "a.png"), dtype=np.int16)
    eager = np.asarray(translate(generator, Image.open(images / "a.png")), dtype=np.int16)
    assert np.abs(ours - eager).max() <= 1
    assert load_generator(onnx_path).input_nc == 3
