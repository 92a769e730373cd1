"""SinCUT end to end on tiny configs (32 px, ngf 4): the objective's extra terms, train.py --mode sincut,
loading and translating its output, resume, the --data-dir form and its errors, and convert --mode sincut."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from cut_hf import PatchSampler, StyleGAN2Discriminator, StyleGAN2Generator, translate
from cut_hf.hub.loading import load_generator
from cut_hf.objectives.losses import gan_loss
from cut_hf.models.generator import nce_channels
from cut_hf.training.checkpoints import CheckpointManager
from tests.helpers import LocalHub
from tests.training.test_train import _event_tags, _one_thread_and_fresh_accelerate, run_main  # noqa: F401 - fixture
from tests.reference.official_sincut import StyleGAN2Discriminator as OfficialD
from tests.reference.official_sincut import StyleGAN2Generator as OfficialG

import cut_hf.cli.train as train

TINY = ["--mode", "sincut", "--crop-size", "32", "--ngf", "4", "--ndf", "4", "--n-blocks", "4", "--batch-size", "2",
        "--netf-nc", "16", "--num-workers", "0", "--report-to", "none", "--epoch-crops", "6", "--n-epochs", "1",
        "--n-epochs-decay", "1"]


def write_image(path: Path, size: tuple[int, int], seed: int) -> Path:
    """A smooth random RGB image of ``size`` (W, H): a gradient plus noise, so crops differ."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = np.linspace(0, 255, w)[None, :, None] * rng.random(3)[None, None, :]
    pixels = np.clip(base + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def images(tmp_path: Path) -> tuple[Path, Path]:
    return write_image(tmp_path / "a.png", (72, 50), 1), write_image(tmp_path / "b.png", (61, 47), 2)


# ----------------------------------------------------------------------------- the objective


def test_paper_defaults_of_mode_sincut():
    c = train.parse_args(["--mode", "sincut", "--image-a", "a.jpg", "--image-b", "b.jpg"])
    assert (c.lambda_nce, c.nce_idt, c.lr, c.beta1, c.beta2, c.batch_size, c.crop_size, c.load_size) == (
        4.0, True, 0.002, 0.0, 0.99, 16, 64, 1024)
    assert (c.gan_mode, c.num_patches, c.nce_layers, c.ngf, c.ndf, c.n_epochs, c.n_epochs_decay) == (
        "nonsaturating", 1, (0, 2, 4), 10, 8, 8, 8)
    assert (c.lambda_r1, c.lambda_identity, c.epoch_crops, c.random_scale_max, c.num_downsampling) == (
        1.0, 1.0, 100_000, 3.0, 1)
    obj = c.objective()
    assert obj.nce_negatives_from_batch and (obj.lambda_r1, obj.lambda_identity, obj.lambda_nce) == (1.0, 1.0, 4.0)
    assert train.parse_args(["--data-dir", "x"]).crop_size == 256  # CUT's defaults are untouched
    for bad in (["--image-a", "a.jpg"], ["--mode", "sincut", "--eval-every", "5"],
                ["--mode", "sincut", "--no-nce-idt"]):
        with pytest.raises(SystemExit):
            train.parse_args(["--data-dir", "x", *bad])


def test_sincut_has_a_config_of_its_own_and_resumes_by_the_one_rule(capsys):
    """SinCUT's flags live in SinCUTTrainConfig (not in CUT's) and are refused in the other modes;
    what a checkpoint must share is, for every task, the config fields marked fixed()."""
    from cut_hf.cli.simclr_train import parse_args as simclr_args
    from cut_hf.training.runtime import fixed_settings
    from cut_hf.training.tasks.cut import CUTTrainConfig
    from cut_hf.training.tasks.sincut import SinCUTTrainConfig

    cut = train.parse_args(["--data-dir", "x"])
    sincut = train.parse_args(["--mode", "sincut", "--image-a", "a.jpg", "--image-b", "b.jpg"])
    assert type(cut) is CUTTrainConfig and isinstance(sincut, SinCUTTrainConfig)
    assert not any(hasattr(cut, name) for name in ("image_a", "epoch_crops", "lambda_r1", "num_downsampling"))
    assert fixed_settings(cut) == ("input_nc", "output_nc", "ngf", "ndf", "n_blocks", "n_layers_d", "norm_g",
                                   "norm_d", "no_antialias", "no_antialias_up", "dropout", "netf_nc", "nce_layers")
    assert set(fixed_settings(sincut)) == {*fixed_settings(cut), "crop_size", "num_downsampling"}
    simclr = simclr_args(["--data", "x"])
    assert fixed_settings(simclr) == ("backbone", "cifar_stem", "proj_dim", "optimizer")
    for flag, value in (("--epoch-crops", "10"), ("--lambda-r1", "2"), ("--num-downsampling", "2")):
        with pytest.raises(SystemExit):
            train.parse_args(["--data-dir", "x", flag, value])
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert flag in err and "add --mode sincut" in err


def _objective():
    from accelerate import Accelerator

    c = train.parse_args(["--image-a", "a", "--image-b", "b", *TINY, "--lambda-r1", "0.7", "--lambda-identity", "2"])
    torch.manual_seed(0)
    objective, optimizers, _ = train.setup_training(c, Accelerator(cpu=True))
    real_a, real_b = torch.rand(3, 3, 32, 32) * 2 - 1, torch.rand(3, 3, 32, 32) * 2 - 1
    return objective, optimizers, real_a, real_b


def test_r1_and_identity_terms_inside_the_objective():
    objective, optimizers, real_a, real_b = _objective()
    assert type(objective).__name__ == "SinCUTObjective" and isinstance(objective.generator, StyleGAN2Generator)
    fake = torch.rand(3, 3, 32, 32) * 2 - 1
    loss, terms = objective.discriminator_loss(fake, real_b)
    d = objective.discriminator
    real = real_b.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(d(real).sum(), real)
    r1 = 0.5 * 0.7 * sum(grad[i].pow(2).sum() for i in range(3)) / 3  # 0.5 lambda E_i ||grad_i||^2
    torch.testing.assert_close(terms["D_R1"], r1)
    expected = (gan_loss(d(fake), False, "nonsaturating") + gan_loss(d(real_b), True, "nonsaturating")) * 0.5 + r1
    torch.testing.assert_close(loss, expected)
    # R1 trains D: its graph reaches D's parameters (second order).
    d.zero_grad()
    terms["D_R1"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in d.parameters())

    torch.manual_seed(1)
    out = objective.forward(real_a, real_b)
    torch.manual_seed(2)
    loss_g, g_terms = objective.generator_loss(real_a, real_b, out)
    idt = (out["idt_B"] - real_b).abs().mean() * 2.0
    torch.testing.assert_close(g_terms["idt"], idt)
    rest = g_terms["G_GAN"] + (g_terms["NCE"] + g_terms["NCE_Y"]) * 0.5
    torch.testing.assert_close(loss_g, rest + idt)
    # NCE: one patch per crop and layer, the negatives the other crops' patches (the official
    # nce_includes_all_negatives_from_minibatch), written out: (3 crops, 3 crops) logits per layer.
    torch.manual_seed(2)  # the same patch positions as the objective drew
    k_pool, ids = objective.sampler([f[:3].detach() for f in out["feats"]], 1)
    q_pool, _ = objective.sampler(objective.generator.encode(out["fake_B"]), 1, ids)
    total = 0.0
    for q, k in zip(q_pool, k_pool):
        sim = q @ k.detach().T  # (3, 3): the diagonal holds the positives
        logits = torch.cat([sim.diag()[:, None], sim.masked_fill(torch.eye(3, dtype=torch.bool), -10.0)], 1)
        total = total + F.cross_entropy(logits / 0.07, torch.zeros(3, dtype=torch.long)) * 4.0
    torch.testing.assert_close(g_terms["NCE"], total / 3)


def test_training_step_logs_the_two_terms():
    from accelerate import Accelerator

    objective, optimizers, real_a, real_b = _objective()
    losses = objective.training_step({"A": real_a, "B": real_b}, optimizers, Accelerator(cpu=True))
    assert {"D_R1", "idt", "NCE", "NCE_Y", "G_GAN", "D_real", "D_fake"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())


# ----------------------------------------------------------------------------- train.py end to end


def test_three_steps_outputs_load_and_translate_at_the_image_size(images, tmp_path: Path, capsys):
    out = tmp_path / "out"
    a, b = images
    rc = run_main(["--image-a", str(a), "--image-b", str(b), "--output-dir", str(out), *TINY, "--max-steps", "3",
                   "--sample-every", "3", "--checkpoint-every", "3"])
    assert rc == 0, capsys.readouterr().err
    assert "A `a.png` (72x50), B `b.png` (61x47)" in capsys.readouterr().out
    g = load_generator(out)
    assert isinstance(g, StyleGAN2Generator) and (g.ngf, g.crop_size, g.n_blocks) == (4, 32, 4)
    StyleGAN2Discriminator.from_pretrained(out / "discriminator", strict=True)
    sampler = PatchSampler.from_pretrained(out / "sampler", strict=True)
    assert sampler.in_channels == nce_channels(g._hub_mixin_config) == g.feature_channels()
    ckpt = CheckpointManager(out / "checkpoints").complete()[-1]
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["task"] == "sincut" and state["args"]["crop_size"] == 32 and state["step"] == 3
    saved = load_file(ckpt / "model.safetensors")
    assert all(torch.equal(v, saved[f"generator.{k}"]) for k, v in g.state_dict().items())
    card = (out / "generator" / "README.md").read_text()
    for text in ("SinCUT a → b", "D_R1 (mean of last 3 steps)", "idt (mean", "StyleGAN2 G (ngf 4", "samples.png"):
        assert text in card, text
    assert "{{" not in card
    odd = write_image(tmp_path / "odd.png", (67, 45), 3)
    result = translate(g, str(odd))
    assert result.size == (67, 45)
    # The app loads it too, and its PatchNCE explorer runs on its encoder layers.
    from cut_hf.demo.models import load_demo_model
    from cut_hf.demo.patch_explorer import patch_similarity

    demo = load_demo_model(out)
    assert "StyleGAN2Generator ngf 4" in demo.describe() and demo.sampler is not None
    with Image.open(odd) as im:
        assert len(patch_similarity(demo.generator, im, 10, 20, demo.sampler).layers) == 3
    from cut_hf.cli.translate import main as translate_main

    assert translate_main(["--model", str(out), "--input", str(odd), "--output", str(tmp_path / "t")]) == 0
    with Image.open(next((tmp_path / "t").iterdir())) as im:
        assert im.size == (67, 45)


def test_resume_is_bit_identical(images, tmp_path: Path, capsys):
    """4 steps straight == 2 steps, resume, 2 steps (3 steps per epoch: the resumed run crosses the
    epoch boundary, where the lr decays). The generator's noise comes from the global RNG, which
    the checkpoint restores."""
    a, b = images
    common = ["--image-a", str(a), "--image-b", str(b), *TINY, "--checkpoint-every", "2"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert run_main([*common, "--output-dir", str(straight), "--max-steps", "4"]) == 0
    assert run_main([*common, "--output-dir", str(split), "--max-steps", "2"]) == 0
    assert run_main([*common, "--output-dir", str(split), "--max-steps", "4", "--resume", "latest"]) == 0
    for sub in ("generator", "sampler", "discriminator"):
        x, y = load_file(straight / sub / "model.safetensors"), load_file(split / sub / "model.safetensors")
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), sub
    # A run with another crop size (other StyleGAN2 widths) cannot resume it, nor a CUT run.
    capsys.readouterr()
    assert run_main([*common, "--output-dir", str(split), "--crop-size", "16", "--max-steps", "6",
                     "--resume", "latest"]) == 1
    assert "crop_size" in capsys.readouterr().err
    data = tmp_path / "d"
    for domain, image in (("trainA", a), ("trainB", b)):
        (data / domain).mkdir(parents=True)
        (data / domain / image.name).write_bytes(image.read_bytes())
    assert run_main(["--data-dir", str(data), "--output-dir", str(split), "--crop-size", "32", "--ngf", "4",
                     "--n-blocks", "2", "--num-workers", "0", "--max-steps", "6", "--resume", "latest"]) == 1
    assert "not a cut checkpoint" in capsys.readouterr().err


def test_data_dir_form_and_its_errors(tmp_path: Path, capsys):
    data = tmp_path / "d"
    write_image(data / "trainA" / "x.png", (40, 40), 1)
    write_image(data / "trainB" / "y.jpg", (48, 36), 2)
    out = tmp_path / "o"
    assert run_main(["--data-dir", str(data), "--output-dir", str(out), *TINY, "--max-steps", "1",
                     "--checkpoint-every", "0"]) == 0
    assert "SinCUT x → y" in (out / "generator" / "README.md").read_text()
    write_image(data / "trainA" / "z.png", (40, 40), 3)
    capsys.readouterr()
    assert run_main(["--data-dir", str(data), "--output-dir", str(out), *TINY, "--max-steps", "1"]) == 1
    assert "exactly one image in domain A" in capsys.readouterr().err
    a, b = data / "trainA" / "x.png", data / "trainB" / "y.jpg"
    assert run_main(["--image-a", str(a), "--image-b", str(tmp_path / "missing.png"), "--output-dir", str(out),
                     *TINY]) == 1
    assert "missing.png" in capsys.readouterr().err
    assert run_main(["--image-a", str(a), "--image-b", str(b), "--output-dir", str(out), *TINY,
                     "--crop-size", "24"]) == 1
    assert "power-of-two --crop-size" in capsys.readouterr().err
    assert run_main(["--image-a", str(a), "--image-b", str(b), "--output-dir", str(out), *TINY,
                     "--n-blocks", "2"]) == 1  # NCE layer 4 needs 2 encoder blocks
    assert "layers [4] out of range" in capsys.readouterr().err


def test_tensorboard_hub_upload_and_nan_guard(images, tmp_path: Path, monkeypatch, capsys):
    """The runtime's features reach SinCUT: R1/identity scalars and samples in TensorBoard, the
    three folders on the Hub (generator at the root), and a NaN in a SinCUT term stops the run."""
    import huggingface_hub

    import cut_hf.objectives.cut as cut_objective

    a, b = images
    LocalHub.reset(tmp_path / "hub")
    monkeypatch.setattr(huggingface_hub, "HfApi", LocalHub)
    common = ["--image-a", str(a), "--image-b", str(b), *TINY]
    assert run_main([*common, "--output-dir", str(tmp_path / "o"), "--max-steps", "2", "--report-to", "tensorboard",
                     "--log-every", "1", "--sample-every", "2", "--push-to-hub", "--hub-model-id", "me/sincut"]) == 0
    scalars, pictures = _event_tags(tmp_path / "o" / "logs")
    assert {"D_R1", "idt", "NCE", "NCE_Y", "G_GAN", "lr"} <= scalars and "samples" in pictures
    repo = tmp_path / "hub" / "me" / "sincut"
    assert isinstance(load_generator(repo), StyleGAN2Generator)
    StyleGAN2Discriminator.from_pretrained(repo / "discriminator", strict=True)
    real = cut_objective.identity_loss
    monkeypatch.setattr(cut_objective, "identity_loss", lambda *args: real(*args) * float("nan"))
    capsys.readouterr()
    assert run_main([*common, "--output-dir", str(tmp_path / "nan"), "--max-steps", "2"]) == 1
    assert "step 1: loss idt is nan" in capsys.readouterr().err


# ----------------------------------------------------------------------------- convert --mode sincut


def test_convert_official_sincut_checkpoints(tmp_path: Path):
    from cut_hf.cli.convert import main as convert_main

    torch.manual_seed(0)
    official_g, official_d = OfficialG(ngf=8, crop_size=32, n_blocks=4), OfficialD(ndf=4, crop_size=32)
    with torch.no_grad():
        for p in list(official_g.parameters()) + list(official_d.parameters()):
            p.add_(torch.randn_like(p) * 0.1)  # biases away from zero; noise weights too (fixed seed below)
    feats = StyleGAN2Generator(ngf=8, crop_size=32, n_blocks=4).feature_channels()
    netf = PatchSampler(feats, num_patches=1, nc=16)
    paths = {}
    for name, net in (("G", official_g), ("D", official_d), ("F", netf)):
        paths[name] = tmp_path / f"latest_net_{name}.pth"
        torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, paths[name])  # DDP-saved
    out = tmp_path / "conv"
    assert convert_main(["--checkpoint", str(paths["G"]), "--netD", str(paths["D"]), "--netF", str(paths["F"]),
                         "--output", str(out), "--mode", "sincut", "--name", "photo2painting"]) == 0
    g = load_generator(out)
    d = StyleGAN2Discriminator.from_pretrained(out, subfolder="discriminator")
    PatchSampler.from_pretrained(out, subfolder="sampler")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.manual_seed(5)
        ref = official_g(x)
        torch.manual_seed(5)
        torch.testing.assert_close(g(x), ref, atol=1e-5, rtol=0)
        torch.testing.assert_close(d(x), official_d(x), atol=1e-5, rtol=0)
    card = (out / "README.md").read_text()
    assert "SinCUT" in card
    # SinCUT's StyleGAN2 networks carry more than the paper's BSD licence: the card names them.
    meta = card.split("---")[1]
    assert "license: other" in meta and "license_name: bsd-2-clause-and-nvidia-source-code-license-nc" in meta
    assert "NVIDIA's Source Code License-NC" in card and "Taesung Park and Jun-Yan Zhu" in card
    # Without --mode sincut the message says which flags it needs.
    assert convert_main(["--checkpoint", str(paths["G"]), "--output", str(tmp_path / "c2")]) == 1
