"""Videos: frame count, rate, size and audio kept; clip statistics steady colours; windows, tiles,
SinCUT noise, bad inputs, and the command line's resume."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from cut_hf import CUTGenerator, StyleGAN2Generator, translate
from cut_hf.__main__ import main as cut_hf_main
from cut_hf.evaluation.flicker import flicker, still_mask
from cut_hf.translation.inference import Tiling
from cut_hf.translation.video import (
    VideoLoadError,
    _Sampler,
    _spread,
    fixed_noise,
    read_frames,
    translate_video,
    video_info,
)
from tests.helpers import make_clip

H, W, BAND = 96, 128, 16  # the clip's size; still bands of BAND rows at the top and bottom


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4")


@pytest.fixture(scope="module")
def small() -> CUTGenerator:
    torch.manual_seed(0)
    return CUTGenerator(ngf=4, n_blocks=1)


def _bands() -> torch.Tensor:
    mask = torch.zeros(H, W, dtype=torch.bool)
    mask[:BAND], mask[-BAND:] = True, True
    return mask


def _audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(container.streams.audio[0]) if p.dts is not None]


def _frames(path: Path) -> torch.Tensor:
    return torch.stack(list(read_frames(path))).float()


# ------------------------------------------------------------------------------------ done when
def test_cli_translates_a_clip_keeping_frames_rate_size_and_audio(clip, small, tmp_path) -> None:
    small.save_pretrained(tmp_path / "model")
    out = tmp_path / "out"
    code = cut_hf_main(["translate", "--model", str(tmp_path / "model"), "--input", str(clip), "--output", str(out),
                        "--device", "cpu"])
    assert code == 0
    width, height, rate, frames, _ = video_info(out / "clip.mp4")
    assert (width, height, rate) == (W, H, 12)
    assert len(list(read_frames(out / "clip.mp4"))) == frames == 36
    assert _audio_packets(out / "clip.mp4") == _audio_packets(clip)  # copied, not re-encoded
    assert not list(out.glob(".*.partial"))


def test_clip_statistics_halve_the_flicker_of_frame_by_frame(clip, tmp_path) -> None:
    torch.manual_seed(0)
    g = CUTGenerator(ngf=8, n_blocks=6)  # the paper's initialisation...
    last = [m for m in g.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.weight.mul_(30)  # ...with a stronger output layer, so the result is not a flat grey
    frames = list(read_frames(clip))
    alone = [torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in translate(g, frames)]
    report = translate_video(g, clip, tmp_path / "steady.mp4")
    assert report.temporal == "clip" and report.frames == 36 and report.audio
    per_frame = flicker(alone, _bands())
    steady = flicker(read_frames(tmp_path / "steady.mp4"), _bands())
    assert per_frame.mean_spread > 1.0  # frame by frame pulses visibly
    assert steady.mean_spread <= 0.5 * per_frame.mean_spread


# ---------------------------------------------------------------------------------------- modes
def test_frame_mode_is_translate_on_each_frame(clip, small, tmp_path) -> None:
    translate_video(small, clip, tmp_path / "f.mp4", temporal="frame", crf=0)
    alone = torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in translate(small, list(
        read_frames(clip)))]).float()
    assert (_frames(tmp_path / "f.mp4") - alone).abs().mean() < 1.5  # only yuv420p rounding between them


def test_window_follows_a_change_of_lighting(small, tmp_path) -> None:
    dark, bright = make_clip(tmp_path / "a.mp4", 16, audio=False), make_clip(tmp_path / "b.mp4", 16, audio=False)
    frames = [*read_frames(dark), *[(f.float() * 0.3).to(torch.uint8) for f in read_frames(bright)]]
    two = tmp_path / "two.mp4"
    with av.open(str(two), "w") as out:  # 16 frames, then 16 much darker ones
        stream = out.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt, stream.options = W, H, "yuv420p", {"crf": "0"}
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(f.permute(1, 2, 0).contiguous().numpy(), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    results = {}
    for temporal in ("clip", "window", "frame"):
        translate_video(small, two, tmp_path / f"{temporal}.mp4", temporal=temporal, window=8, crf=0)
        results[temporal] = _frames(tmp_path / f"{temporal}.mp4")
    err = {k: (v - results["frame"]).abs().mean().item() for k, v in results.items() if k != "frame"}
    assert err["window"] < 0.5 * err["clip"]  # a window's statistics follow the lighting, the clip's cannot


def test_tiles_match_whole_frames_with_clip_statistics(small, tmp_path) -> None:
    clip = make_clip(tmp_path / "short.mp4", frames=6, size=(96, 256), audio=False)
    whole = translate_video(small, clip, tmp_path / "whole.mp4", crf=0)
    tiled = translate_video(small, clip, tmp_path / "tiled.mp4", tiling=Tiling(tile=128), crf=0)
    assert tiled.tiled and not whole.tiled
    assert (_frames(tmp_path / "whole.mp4") - _frames(tmp_path / "tiled.mp4")).abs().mean() < 2.0


def test_sincut_noise_is_drawn_once_per_clip(tmp_path) -> None:
    torch.manual_seed(0)
    g = StyleGAN2Generator(ngf=4, n_blocks=1, crop_size=16, nce_layers=(0,))
    for name, p in g.named_parameters():
        if name.endswith("noise.weight"):
            p.data.fill_(0.5)  # visible noise (it starts at zero)
    still = make_clip(tmp_path / "still.mp4", frames=6, size=(32, 32), audio=False, shape_rows=0)
    translate_video(g, still, tmp_path / "s.mp4", crf=0, seed=3)
    out = _frames(tmp_path / "s.mp4")
    assert (out[1:] - out[:1]).abs().max() <= 2  # a still input stays still: one noise for the clip
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    assert not torch.equal(g(x), g(x))  # the model itself still draws per call...
    assert torch.equal(fixed_noise(g, 3)(x), fixed_noise(g, 3)(x))  # ...a seed gives the same result
    assert not torch.equal(fixed_noise(g, 3)(x), fixed_noise(g, 4)(x))


def test_animated_gif_in_and_out(small, tmp_path) -> None:
    frames = [Image.fromarray(np.full((20, 24, 3), 40 * i, np.uint8)) for i in range(5)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    report = translate_video(small, tmp_path / "a.gif", tmp_path / "b.gif")
    assert report.frames == 5 and report.size == (24, 20) and not report.audio
    assert len(list(read_frames(tmp_path / "b.gif"))) == 5


# ------------------------------------------------------------------------------------- bad input
def test_bad_inputs_fail_in_one_line_and_write_nothing(small, clip, tmp_path) -> None:
    (tmp_path / "bad.mp4").write_text("not a video")
    with pytest.raises(VideoLoadError, match=r"cannot read video .*bad\.mp4") as err:
        translate_video(small, tmp_path / "bad.mp4", tmp_path / "o.mp4")
    assert "\n" not in str(err.value)
    with pytest.raises(VideoLoadError, match="cannot read video"):
        translate_video(small, tmp_path / "missing.mp4", tmp_path / "o.mp4")
    with pytest.raises(ValueError, match="temporal must be one of clip, window, frame"):
        translate_video(small, clip, tmp_path / "o.mp4", temporal="scene")
    Image.new("RGB", (25, 21)).save(tmp_path / "odd.gif", save_all=True, append_images=[Image.new("RGB", (25, 21))])
    with pytest.raises(ValueError, match="odd side"):
        translate_video(small, tmp_path / "odd.gif", tmp_path / "o.mp4")  # H.264 in yuv420p needs even sides
    assert not list(tmp_path.glob("o.mp4")) and not list(tmp_path.glob(".o.mp4.partial"))


def test_cli_resumes_videos_and_redoes_half_written_ones(clip, small, tmp_path, capsys) -> None:
    small.save_pretrained(tmp_path / "model")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "clip.mp4").write_bytes(clip.read_bytes())
    Image.new("RGB", (16, 12)).save(tmp_path / "in" / "still.png")
    (tmp_path / "in" / "bad.mp4").write_text("not a video")
    out = tmp_path / "out"
    argv = ["translate", "--model", str(tmp_path / "model"), "--input", str(tmp_path / "in"), "--output", str(out),
            "--device", "cpu"]
    assert cut_hf_main(argv) == 0
    assert (out / "still.png").is_file() and (out / "clip.mp4").is_file()
    first = (out / "clip.mp4").stat().st_mtime_ns
    assert cut_hf_main(argv) == 0
    assert (out / "clip.mp4").stat().st_mtime_ns == first  # finished: skipped
    captured = capsys.readouterr()
    assert "translated 0 of 2 video(s)" in captured.out and "1 already there, 1 unreadable" in captured.out
    assert "unreadable: cannot read video" in captured.err and "bad.mp4" in captured.err
    (out / "clip.mp4").write_bytes(b"half")  # a broken output (not from us: ours are renamed whole)
    (out / ".clip.mp4.partial").write_bytes(b"left by a killed run")
    assert cut_hf_main(argv) == 0
    assert video_info(out / "clip.mp4")[3] == 36 and not (out / ".clip.mp4.partial").exists()


def test_sampler_spreads_a_stream_of_unknown_length() -> None:
    sampler = _Sampler(4)
    for i in range(1000):
        sampler.add(i)
    assert 4 <= len(sampler.kept) < 8 and sampler.seen == 1000
    picked = _spread(sampler.kept, 4)
    assert picked[0] == 0 and picked[-1] > 600  # from the start to near the end


def test_still_mask_finds_the_still_bands(clip) -> None:
    mask = still_mask(read_frames(clip))
    assert mask[:BAND].float().mean() > 0.95 and mask[-BAND:].float().mean() > 0.95
    assert mask[H // 2].float().mean() < 0.1  # the block crossed the middle row


def test_two_processes_share_out_whole_videos(small, tmp_path, monkeypatch) -> None:
    from accelerate import debug_launcher

    from cut_hf.translation import video_files
    from tests.translation.test_folders import _launched_main

    small.save_pretrained(tmp_path / "model")
    (tmp_path / "in").mkdir()
    for i in range(3):
        make_clip(tmp_path / "in" / f"v{i}.mp4", frames=4, size=(32, 32), audio=False, seed=i)
    log, real = tmp_path / "writes.log", video_files.translate_video

    def logged(generator, src, dst, **kwargs):
        report = real(generator, src, dst, **kwargs)
        with open(log, "a") as f:  # appends of one short line do not interleave
            f.write(f"{os.getpid()} {Path(dst).name} {report.frames}\n")
        return report

    monkeypatch.setattr(video_files, "translate_video", logged)
    argv = ["--model", str(tmp_path / "model"), "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")]
    debug_launcher(_launched_main, args=(argv,), num_processes=2)
    writes = [line.split() for line in log.read_text().splitlines()]
    assert sorted(name for _, name, _ in writes) == ["v0.mp4", "v1.mp4", "v2.mp4"]  # each video once, whole
    assert len({pid for pid, _, _ in writes}) == 2 and all(frames == "4" for _, _, frames in writes)


def test_bf16_runs_and_stays_close_to_fp32(small, tmp_path) -> None:
    clip = make_clip(tmp_path / "c.mp4", frames=4, size=(32, 32), audio=False)
    fp32 = translate_video(small, clip, tmp_path / "fp32.mp4", crf=0)
    bf16 = translate_video(small, clip, tmp_path / "bf16.mp4", precision="bf16", crf=0)
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    assert (_frames(tmp_path / "fp32.mp4") - _frames(tmp_path / "bf16.mp4")).abs().mean() < 4


def test_int8_runs_frame_by_frame_only(small, tmp_path) -> None:
    pytest.importorskip("openvino")
    clip = make_clip(tmp_path / "c.mp4", frames=4, size=(32, 32), audio=False)
    with pytest.raises(ValueError, match=r"int8.*use temporal='frame'"):
        translate_video(small, clip, tmp_path / "no.mp4", precision="int8")
    report = translate_video(small, clip, tmp_path / "int8.mp4", precision="int8", temporal="frame", crf=0)
    assert report.precision == "int8" and report.frames == 4 and report.device == "cpu"
    translate_video(small, clip, tmp_path / "fp32.mp4", temporal="frame", crf=0)
    assert (_frames(tmp_path / "int8.mp4") - _frames(tmp_path / "fp32.mp4")).abs().mean() < 8
