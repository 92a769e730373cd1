"""cut-hf convert: official checkpoints in, from_pretrained folders out, bad files refused.

Checkpoints are made the way the original code makes them: the independent re-implementation of the
official networks (tests/reference/official.py) with random weights, ``torch.save(net.state_dict())``
(and a DataParallel-style ``module.`` prefix). One test writes the default generator's 52 keys by hand
from the layout table in DESIGN.md, at full size (ngf 64, 9 blocks).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tests.helpers import assert_close_to, sharpen
from tests.reference.official import PatchSampleF, official_discriminator, official_generator

from cut_hf import CUTGenerator, PatchDiscriminator, PatchSampler
from cut_hf.official import convert as convert_module
from cut_hf.cli.convert import main
from cut_hf.official.checkpoints import (
    ConversionError,
    infer_generator_config,
    load_official_generator,
    load_state_dict_file,
)
from cut_hf.official.convert import convert

ROOT = Path(__file__).resolve().parents[2]


def save_state_dict(state: dict, path: Path, module_prefix: bool = False) -> Path:
    if module_prefix:
        state = {f"module.{k}": v for k, v in state.items()}
    torch.save(state, path)
    return path


def one_error_line(captured: str) -> str:
    lines = [line for line in captured.strip().splitlines() if line.strip()]
    assert len(lines) == 1, captured
    assert "Traceback" not in captured
    return lines[0]


@pytest.fixture
def x() -> torch.Tensor:
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1


# ---------------------------------------------------------------------------------------------
# Generators: inferred config, strict load, same outputs as the original network
# ---------------------------------------------------------------------------------------------

GENERATOR_CASES = [
    dict(n_blocks=9, antialias=True, antialias_up=True, dropout=False, prefix=False),
    dict(n_blocks=9, antialias=True, antialias_up=True, dropout=False, prefix=True),
    dict(n_blocks=6, antialias=False, antialias_up=False, dropout=False, prefix=True),
    dict(n_blocks=6, antialias=True, antialias_up=False, dropout=True, prefix=False),
    dict(n_blocks=9, antialias=False, antialias_up=True, dropout=False, prefix=False),
]


@pytest.mark.parametrize("case", GENERATOR_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_generator_converts_with_inferred_config_and_same_outputs(tmp_path, x, case):
    case = dict(case)
    prefix = case.pop("prefix")
    official = sharpen(official_generator(ngf=4, seed=1, **case)).eval()  # O(1) outputs: see sharpen
    ckpt = save_state_dict(official.state_dict(), tmp_path / "latest_net_G.pth", prefix)

    out = convert(ckpt, tmp_path / "converted", name="horse2zebra", mode="cut")
    converted = CUTGenerator.from_pretrained(out, strict=True).eval()

    expected_config = dict(input_nc=3, output_nc=3, ngf=4, norm="instance", **case)
    assert {k: converted._hub_mixin_config[k] for k in expected_config} == expected_config
    direct = CUTGenerator(**expected_config).eval()
    direct.load_state_dict(official.state_dict(), strict=True)
    with torch.no_grad():
        y_converted, y_direct, y_official = converted(x), direct(x), official(x)
    assert torch.equal(y_converted, y_direct)  # same weights, same code: bit for bit
    assert_close_to(y_converted, y_official, rel=1e-5)  # and the original network's, which varies


def test_grayscale_and_batchnorm_generators_infer_channels_and_norm(tmp_path, x):
    # At the paper's init a batch-norm generator's output is ~4e-12 (no norm rescales it): weights and
    # running statistics at He scale (sharpen) make it O(1), so every layer, skip connections
    # included, shows far above float32 rounding (rel 1e-5).
    official = sharpen(official_generator(input_nc=1, output_nc=3, ngf=4, n_blocks=2, norm="batch", seed=2)).eval()
    sd = official.state_dict()
    config = infer_generator_config(sd)
    assert (config["input_nc"], config["output_nc"], config["norm"], config["n_blocks"]) == (1, 3, "batch", 2)
    generator = load_official_generator(save_state_dict(sd, tmp_path / "g.pth"))
    with torch.no_grad():
        assert_close_to(generator(x[:, :1]), official(x[:, :1]), rel=1e-5)


def test_cyclegan_style_checkpoint_with_stale_instance_norm_buffers(tmp_path, x, capsys):
    """pix2pix/CycleGAN's ResNet generator is the non-anti-aliased layout; PyTorch < 0.4 saved
    running stats for its instance norms, which the original test.py deletes before loading."""
    official = sharpen(official_generator(ngf=4, n_blocks=9, antialias=False, antialias_up=False, seed=4)).eval()
    sd = official.state_dict()
    for i in (2, 5, 8, 20, 23):  # the norms after the first conv, the downsamplings and the upsamplings
        sd[f"model.{i}.running_mean"] = torch.randn(sd[f"model.{i - 1}.weight"].shape[0 if i < 19 else 1])
        sd[f"model.{i}.running_var"] = torch.rand_like(sd[f"model.{i}.running_mean"])
    generator = load_official_generator(save_state_dict(sd, tmp_path / "latest_net_G.pth"))
    assert "dropped 10 stale InstanceNorm" in capsys.readouterr().err
    assert generator._hub_mixin_config["norm"] == "instance"
    with torch.no_grad():
        assert_close_to(generator(x), official(x), rel=1e-5)


def official_default_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """The 52 tensors of the official default latest_net_G.pth, written from DESIGN.md's table."""
    g = torch.Generator().manual_seed(seed)

    def conv(cout, cin, k):
        return torch.randn(cout, cin, k, k, generator=g) * 0.02, torch.randn(cout, generator=g) * 0.02

    def blur(channels, row):
        a = torch.tensor(row, dtype=torch.float32)
        filt = a[:, None] * a[None, :]
        scale = 4.0 if len(row) == 4 else 1.0  # Upsample's [1,3,3,1] kernel is multiplied by stride**2
        return (filt / filt.sum() * scale)[None, None].repeat(channels, 1, 1, 1)

    sd: dict[str, torch.Tensor] = {}
    sd["model.1.weight"], sd["model.1.bias"] = conv(64, 3, 7)            # 0-3: pad, conv 7x7, norm, relu
    sd["model.4.weight"], sd["model.4.bias"] = conv(128, 64, 3)          # 4-7: conv, norm, relu, downsample
    sd["model.7.filt"] = blur(128, [1.0, 2.0, 1.0])
    sd["model.8.weight"], sd["model.8.bias"] = conv(256, 128, 3)         # 8-11
    sd["model.11.filt"] = blur(256, [1.0, 2.0, 1.0])
    for i in range(12, 21):                                              # 12-20: nine ResnetBlocks
        for j in (1, 5):
            sd[f"model.{i}.conv_block.{j}.weight"], sd[f"model.{i}.conv_block.{j}.bias"] = conv(256, 256, 3)
    sd["model.21.filt"] = blur(256, [1.0, 3.0, 3.0, 1.0])               # 21-24: upsample, conv, norm, relu
    sd["model.22.weight"], sd["model.22.bias"] = conv(128, 256, 3)
    sd["model.25.filt"] = blur(128, [1.0, 3.0, 3.0, 1.0])               # 25-28
    sd["model.26.weight"], sd["model.26.bias"] = conv(64, 128, 3)
    sd["model.30.weight"], sd["model.30.bias"] = conv(3, 64, 7)          # 29-31: pad, conv 7x7, tanh
    assert len(sd) == 52
    return sd


def test_default_size_official_key_list_converts_to_the_default_generator(tmp_path, x):
    sd = official_default_state_dict()
    ckpt = save_state_dict(sd, tmp_path / "latest_net_G.pth", module_prefix=True)
    out = convert(ckpt, tmp_path / "out", name="horse2zebra", mode="cut")
    converted = CUTGenerator.from_pretrained(out, strict=True).eval()
    defaults = json.loads(json.dumps(CUTGenerator()._hub_mixin_config))
    assert json.loads((out / "config.json").read_text()) == defaults  # ngf 64, 9 blocks, anti-aliased

    official = official_generator(seed=5).eval()  # the original architecture, default options
    official.load_state_dict(sd, strict=True)  # the hand-written key list is the official one
    with torch.no_grad():
        torch.testing.assert_close(converted(x[:1]), official(x[:1]), rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# netD and netF beside the generator, through the CLI
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("d_case", [dict(n_layers=3, antialias=True), dict(n_layers=2, antialias=False)])
def test_cli_converts_discriminator_and_sampler_beside_the_generator(tmp_path, x, d_case, capsys):
    g_official = official_generator(ngf=4, n_blocks=2, seed=1).eval()
    d_official = sharpen(official_discriminator(ndf=4, seed=2, **d_case)).eval()  # O(1) logits
    f_official = PatchSampleF(use_mlp=True, nc=8)
    with torch.no_grad():
        feats = g_official(x, layers=[0, 4, 8, 12, 16], encode_only=True)
        torch.manual_seed(0)
        f_out, ids = f_official(feats, num_patches=5)  # builds the MLPs lazily, as the original does
    g_ckpt = save_state_dict(g_official.state_dict(), tmp_path / "latest_net_G.pth")
    d_ckpt = save_state_dict(d_official.state_dict(), tmp_path / "latest_net_D.pth", module_prefix=True)
    f_ckpt = save_state_dict(f_official.state_dict(), tmp_path / "latest_net_F.pth")
    out = tmp_path / "out"

    rc = main(["--checkpoint", str(g_ckpt), "--netD", str(d_ckpt), "--netF", str(f_ckpt), "--output", str(out),
               "--name", "horse2zebra", "--mode", "fastcut"])
    assert rc == 0, capsys.readouterr().err

    d = PatchDiscriminator.from_pretrained(out / "discriminator", strict=True).eval()
    assert d._hub_mixin_config == dict(input_nc=3, ndf=4, norm="instance", **d_case)
    f = PatchSampler.from_pretrained(out / "sampler", strict=True).eval()
    assert f._hub_mixin_config["in_channels"] == [t.shape[1] for t in feats] and f._hub_mixin_config["nc"] == 8
    g = CUTGenerator.from_pretrained(out, strict=True).eval()
    with torch.no_grad():
        assert_close_to(d(x), d_official(x), rel=1e-5)
        ours, _ = f(feats, patch_ids=ids)  # the sampler alone: the same features in
    for a, b in zip(ours, f_out, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)

    card = (out / "README.md").read_text()
    for text in ("FastCUT", "horse2zebra", "**horse** to **zebra**", "SHA-256", "73.4", "strict=True",
                 "cut-hf convert --checkpoint", "taesungp/contrastive-unpaired-translation"):
        assert text in card, text
    assert "{{" not in card and "{%" not in card
    assert "fastcut" in card.split("---")[1]  # a tag in the YAML metadata
    d_card = (out / "discriminator" / "README.md").read_text()
    assert "Provenance" in d_card and "snapshot_download" in d_card
    # The paper's licence, not cut-hf's MIT: in the metadata of every folder, with its copyright line.
    for folder in (out, out / "discriminator", out / "sampler"):
        text = (folder / "README.md").read_text()
        meta = text.split("---")[1]
        assert "license: bsd-2-clause" in meta and "license: mit" not in meta, folder
        assert "Copyright (c) 2020, Taesung Park and Jun-Yan Zhu" in text, folder


def test_push_to_hub_uploads_the_whole_folder(tmp_path, monkeypatch, x):
    hub = tmp_path / "hub"
    calls: list[tuple] = []

    class FakeRepo:
        def __init__(self, repo_id):
            self.repo_id = repo_id

    class FakeApi:
        """Stands in for the Hub: records the calls and keeps a copy of what was uploaded."""

        def __init__(self, *args, **kwargs):
            pass

        def create_repo(self, repo_id, private=None, exist_ok=False, **kwargs):
            calls.append(("create_repo", repo_id, private, exist_ok))
            return FakeRepo(repo_id)

        def upload_folder(self, *, repo_id, folder_path, repo_type=None, commit_message=None, **kwargs):
            calls.append(("upload_folder", repo_id, repo_type))
            shutil.copytree(folder_path, hub / repo_id)
            return f"https://huggingface.co/{repo_id}/commit/0"

    monkeypatch.setattr(convert_module, "HfApi", FakeApi)
    official = official_generator(ngf=4, n_blocks=2, seed=3).eval()
    g_ckpt = save_state_dict(official.state_dict(), tmp_path / "latest_net_G.pth")
    d_ckpt = save_state_dict(official_discriminator(ndf=4).state_dict(), tmp_path / "latest_net_D.pth")
    rc = main(["--checkpoint", str(g_ckpt), "--netD", str(d_ckpt), "--output", str(tmp_path / "out"),
               "--push-to-hub", "someone/cut-horse2zebra", "--private"])
    assert rc == 0
    assert calls == [("create_repo", "someone/cut-horse2zebra", True, True),
                     ("upload_folder", "someone/cut-horse2zebra", "model")]
    pushed = hub / "someone" / "cut-horse2zebra"
    g = CUTGenerator.from_pretrained(pushed, strict=True).eval()
    PatchDiscriminator.from_pretrained(pushed / "discriminator", strict=True)
    with torch.no_grad():
        torch.testing.assert_close(g(x), official(x), rtol=0, atol=1e-6)
    assert 'from_pretrained("someone/cut-horse2zebra")' in (pushed / "README.md").read_text()


# ---------------------------------------------------------------------------------------------
# Refusals: one clear line, nothing executed, nothing written
# ---------------------------------------------------------------------------------------------

class _Exploit:
    """Unpickling this (without weights_only) would create a file via os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_malicious_pickle_is_refused_and_never_executed(tmp_path, writer, capsys):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "latest_net_G.pth"
    payload = {"model.1.weight": torch.zeros(1), "evil": _Exploit(marker)}
    args = ["--checkpoint", str(ckpt), "--output", str(tmp_path / "out")]
    if writer == "torch.save":
        torch.save(payload, ckpt)
        # The real command line, as a user runs it (one fresh process: importing torch is slow here).
        proc = subprocess.run([sys.executable, "-m", "cut_hf", "convert", *args], capture_output=True, text=True,
                              cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
        rc, err = proc.returncode, proc.stderr
    else:
        with ckpt.open("wb") as f:
            pickle.dump(payload, f)
        rc, err = main(args), capsys.readouterr().err
    assert rc == 1
    line = one_error_line(err)
    assert "refusing" in line and "needs to run code" in line and "system" in line, line
    assert not marker.exists()  # the payload never ran
    assert not (tmp_path / "out").exists()
    if writer == "pickle.dump":  # and unsafe loading really would have run it: the exploit is live
        with ckpt.open("rb") as f:
            pickle.load(f)
        assert marker.exists()


def test_truncated_and_empty_and_foreign_files_give_one_line(tmp_path, capsys):
    good = save_state_dict(official_generator(ngf=4, n_blocks=2).state_dict(), tmp_path / "good.pth")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    not_torch = tmp_path / "notes.pth"
    not_torch.write_text("hello, I am not a checkpoint\n")
    a_list = tmp_path / "list.pth"
    torch.save([1, 2, 3], a_list)
    other_net = save_state_dict(torch.nn.Sequential(torch.nn.Linear(4, 2)).state_dict(), tmp_path / "linear.pth")
    cases = {
        truncated: "truncated or not a PyTorch checkpoint",
        empty: "is empty",
        not_torch: "truncated or not a PyTorch checkpoint",
        a_list: "holds list, not a state dict",
        other_net: "match no CUT network",
        tmp_path / "missing.pth": "does not exist",
    }
    for path, expected in cases.items():
        rc = main(["--checkpoint", str(path), "--output", str(tmp_path / "out")])
        assert rc == 1
        line = one_error_line(capsys.readouterr().err)
        assert expected in line, (path.name, line)
    assert not (tmp_path / "out").exists()


def test_wrong_network_in_each_slot_is_refused_with_the_right_flag(tmp_path, capsys):
    g = save_state_dict(official_generator(ngf=4, n_blocks=2).state_dict(), tmp_path / "latest_net_G.pth")
    d = save_state_dict(official_discriminator(ndf=4).state_dict(), tmp_path / "latest_net_D.pth")
    f_net = PatchSampleF(use_mlp=True, nc=8)
    f_net.create_mlp([torch.zeros(1, 3, 4, 4), torch.zeros(1, 8, 4, 4)])
    f = save_state_dict(f_net.state_dict(), tmp_path / "latest_net_F.pth")

    cases = [
        (["--checkpoint", str(d)], "latest_net_D.pth is a PatchGAN discriminator (netD), not a CUT generator (netG): "
                                   "pass it with --netD"),
        (["--checkpoint", str(f)], "latest_net_F.pth is a PatchNCE sampler (netF), not a CUT generator (netG): "
                                   "pass it with --netF"),
        (["--checkpoint", str(g), "--netD", str(g)], "is a CUT generator (netG), not a PatchGAN discriminator"),
        (["--checkpoint", str(g), "--netF", str(d)], "is a PatchGAN discriminator (netD), not a PatchNCE sampler"),
    ]
    for args, expected in cases:
        assert main([*args, "--output", str(tmp_path / "out")]) == 1
        assert expected in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()  # a refused netD/netF leaves no half-written folder


def test_generator_with_broken_layout_is_refused(tmp_path):
    sd = official_generator(ngf=4, n_blocks=3).state_dict()
    del sd["model.13.conv_block.5.weight"]  # a block missing its second conv
    with pytest.raises(ConversionError, match="unexpected residual block layout|does not match"):
        load_official_generator(save_state_dict(sd, tmp_path / "g.pth"))
    sd = official_generator(ngf=4, n_blocks=3).state_dict()
    sd["model.1.weight"] = sd["model.1.weight"][:, :, :5, :5]  # not the 7x7 input conv
    with pytest.raises(ConversionError, match="no 7x7 input convolution"):
        load_official_generator(save_state_dict(sd, tmp_path / "g2.pth"))


def test_nested_state_dict_and_repeated_prefix_are_accepted(tmp_path):
    sd = official_generator(ngf=4, n_blocks=2).state_dict()
    torch.save({"state_dict": {f"module.module.{k}": v for k, v in sd.items()}, "epoch": torch.tensor(5)},
               tmp_path / "nested.pth")
    loaded = load_state_dict_file(tmp_path / "nested.pth")
    assert set(loaded) == set(sd)


def test_a_new_mode_is_one_table_entry(tmp_path, monkeypatch, capsys):
    """SinCUT-style extension: a MODES entry (here reusing the CUT kinds) is all the CLI and cards need."""
    from cut_hf.official.checkpoints import MODES, Mode

    monkeypatch.setitem(MODES, "othercut", Mode("OtherCUT"))
    g = save_state_dict(official_generator(ngf=4, n_blocks=2).state_dict(), tmp_path / "latest_net_G.pth")
    assert main(["--checkpoint", str(g), "--output", str(tmp_path / "out"), "--mode", "othercut"]) == 0
    assert "OtherCUT" in (tmp_path / "out" / "README.md").read_text()
    monkeypatch.setitem(MODES, "swapped", Mode("Swapped", generator="discriminator"))  # slots name the kinds
    assert main(["--checkpoint", str(g), "--output", str(tmp_path / "out2"), "--mode", "swapped"]) == 1
    assert "not a PatchGAN discriminator" in one_error_line(capsys.readouterr().err)
