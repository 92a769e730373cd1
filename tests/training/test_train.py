"""train.py on tiny configs (32 px, ngf 8): the objective, an end-to-end run, outputs, resume, errors, Hub upload."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from cut_hf import CUTGenerator, PatchDiscriminator, PatchSampler
from cut_hf.training.checkpoints import COMPLETE_MARKER, CheckpointError, CheckpointManager

from tests.helpers import LocalHub, make_images

import cut_hf.cli.train as train

TINY = ["--load-size", "36", "--crop-size", "32", "--ngf", "8", "--ndf", "8", "--n-blocks", "2",
        "--num-patches", "16", "--netf-nc", "16", "--num-workers", "0", "--n-epochs", "1", "--n-epochs-decay", "1"]


@pytest.fixture(autouse=True)
def _one_thread_and_fresh_accelerate():
    """One intra-op thread (on a loaded 2-core machine two threads are ~30x slower), and a fresh
    Accelerate state for every run in this process."""
    from accelerate.state import AcceleratorState, GradientState

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    make_images(root / "trainA", 5, seed=1, prefix="a")
    make_images(root / "trainB", 4, seed=2, prefix="b")
    return root


def reset_accelerate() -> None:
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def run_main(argv: list[str]) -> int:
    try:
        return train.main(argv)
    finally:
        reset_accelerate()


# ----------------------------------------------------------------------------- the objective


def _tiny_setup(extra: list[str] = ()):
    from accelerate import Accelerator

    args = train.parse_args(["--data-dir", "unused", "--batch-size", "2", *TINY, *extra])
    torch.manual_seed(0)
    objective, optimizers, _ = train.setup_training(args, Accelerator(cpu=True))
    real_a, real_b = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    return args, objective, optimizers, real_a, real_b


def _g_loss_and_grads(args, models, real_a, real_b, seed: int):
    torch.manual_seed(seed)  # the same flip coin and patch locations for both variants
    out = models.forward(real_a, real_b)
    loss, terms = models.generator_loss(real_a, real_b, out)
    params = list(models.generator.parameters()) + list(models.sampler.parameters())
    for p in params:
        p.grad = None
    loss.backward()
    return loss.detach(), {k: v.detach() for k, v in terms.items()}, [p.grad.clone() for p in params], out


def test_reused_keys_equal_recomputed_keys(monkeypatch):
    """Without flip equivariance the forward pass's features are exactly the keys a second encoder
    pass makes: same loss terms, same gradients for G and F, two encoder passes fewer."""
    args, models, _, real_a, real_b = _tiny_setup()
    calls = []
    encode = models.generator.encode
    monkeypatch.setattr(models.generator, "encode", lambda *a, **k: calls.append(1) or encode(*a, **k))
    results = {}
    for reuse in (True, False):
        models.config = dataclasses.replace(models.config, reuse_features=reuse)
        calls.clear()
        results[reuse] = _g_loss_and_grads(args, models, real_a, real_b, seed=3)
        results[reuse] += (len(calls),)
    (loss_r, terms_r, grads_r, _, n_r), (loss_n, terms_n, grads_n, _, n_n) = results[True], results[False]
    assert set(terms_r) == {"G_GAN", "NCE", "NCE_Y"}
    assert n_r == 2 and n_n == 4  # queries of fake_B and idt_B; plus keys of real_A and real_B
    for k in terms_r:
        torch.testing.assert_close(terms_r[k], terms_n[k], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(loss_r, loss_n, rtol=1e-6, atol=1e-6)
    for g_r, g_n in zip(grads_r, grads_n):
        torch.testing.assert_close(g_r, g_n, rtol=1e-5, atol=1e-8)
    assert terms_r["NCE"] > 0 and torch.isfinite(loss_r)


def test_fastcut_flip_follows_official_code():
    """FastCUT: when the coin flips the input, queries are flipped back and keys come from the
    unflipped real_A (the official calculate_NCE_loss), so reuse must not be used then."""
    args, models, _, real_a, real_b = _tiny_setup(["--mode", "fastcut"])
    assert args.lambda_nce == 10.0 and args.flip_equivariance and not args.nce_idt
    seed = next(s for s in range(100) if torch.rand((), generator=torch.Generator().manual_seed(s)) < 0.5)
    loss, terms, _, out = _g_loss_and_grads(args, models, real_a, real_b, seed=seed)
    assert out["flipped"] and out["idt_B"] is None
    # The official computation, written out: G on the flipped input, query features flipped back.
    g, f = models.generator, models.sampler
    torch.manual_seed(seed)
    torch.rand(())  # the coin
    fake = g(torch.flip(real_a, [3]))
    torch.testing.assert_close(fake, out["fake_B"])
    feat_q = [torch.flip(x, [3]) for x in g.encode(fake, args.nce_layers)]
    feat_k = g.encode(real_a, args.nce_layers)
    k_pool, ids = f(feat_k, args.num_patches)
    q_pool, _ = f(feat_q, args.num_patches, ids)
    from cut_hf.objectives.losses import patch_nce_loss

    expected = sum(patch_nce_loss(q, k, 0.07, batch_size=2) * 10.0 for q, k in zip(q_pool, k_pool)) / 5
    torch.testing.assert_close(terms["NCE"], expected, rtol=1e-6, atol=1e-6)


def test_identity_l1_and_residual_generator_options():
    _, objective, _, real_a, real_b = _tiny_setup(["--lambda-identity", "2.5", "--residual"])
    assert objective.generator.residual and objective.config.lambda_identity == 2.5
    torch.manual_seed(3)
    out = objective.forward(real_a, real_b)
    torch.manual_seed(4)
    loss, terms = objective.generator_loss(real_a, real_b, out)
    idt = (out["idt_B"] - real_b).abs().mean() * 2.5
    torch.testing.assert_close(terms["idt"], idt)
    torch.testing.assert_close(loss, terms["G_GAN"] + (terms["NCE"] + terms["NCE_Y"]) * 0.5 + idt)
    # The paper's CUT has no such term: the same step without the flag leaves it out.
    _, plain, _, real_a, real_b = _tiny_setup()
    assert "idt" not in plain.generator_loss(real_a, real_b, plain.forward(real_a, real_b))[1]


def test_training_step_updates_d_first_and_g_with_frozen_d():
    args, models, optimizers, real_a, real_b = _tiny_setup()
    from accelerate.state import AcceleratorState

    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    assert AcceleratorState().num_processes == 1
    d0 = {k: v.clone() for k, v in models.discriminator.state_dict().items()}
    g0 = {k: v.clone() for k, v in models.generator.state_dict().items()}
    f0 = {k: v.clone() for k, v in models.sampler.state_dict().items()}
    losses = models.training_step({"A": real_a, "B": real_b}, optimizers, accelerator)
    out = models.last
    assert set(losses) == {"D_fake", "D_real", "G_GAN", "NCE", "NCE_Y", "skipped_D", "skipped_G"}
    changed = lambda m, ref: any(not torch.equal(v, ref[k]) for k, v in m.state_dict().items())  # noqa: E731
    assert changed(models.discriminator, d0) and changed(models.generator, g0) and changed(models.sampler, f0)
    # D got no gradient from the G step: its grads are exactly those of (D_fake + D_real) / 2.
    d_grads = [p.grad.clone() for p in models.discriminator.parameters()]
    models.discriminator.load_state_dict(d0)
    for p in models.discriminator.parameters():
        p.grad = None
    loss_d, _ = models.discriminator_loss(out["fake_B"], real_b)
    loss_d.backward()
    for g1, p in zip(d_grads, models.discriminator.parameters()):
        torch.testing.assert_close(g1, p.grad)
    # G and F share one optimiser with two parameter groups; D has its own.
    opt_g, opt_d = optimizers
    assert [g["name"] for g in opt_g.param_groups] == ["G", "F"]
    assert len(opt_d.param_groups) == 1


def test_a_subclass_adds_terms_through_the_two_loss_hooks(monkeypatch, data_dir: Path, tmp_path: Path):
    """How SinCUT plugs in: override discriminator_loss / generator_loss, call super(), add terms;
    train.py picks the class by --mode from OBJECTIVES, and the new terms are logged by name."""
    from accelerate import Accelerator

    from cut_hf.objectives.cut import CUTObjective

    class WithExtras(CUTObjective):
        def discriminator_loss(self, fake_b, real_b):
            loss, terms = super().discriminator_loss(fake_b, real_b)
            real = real_b.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.net_d(real).sum(), real, create_graph=True)
            terms["D_R1"] = grad.pow(2).flatten(1).sum(1).mean() * 0.5  # an R1 penalty on real B
            return loss + terms["D_R1"], terms

        def generator_loss(self, real_a, real_b, out):
            loss, terms = super().generator_loss(real_a, real_b, out)
            terms["idt"] = torch.nn.functional.l1_loss(out["idt_B"], real_b)  # an identity L1 term
            return loss + terms["idt"], terms

    args, objective, optimizers, real_a, real_b = _tiny_setup()
    extra = WithExtras(objective.generator, objective.discriminator, objective.sampler, objective.config)
    losses = extra.training_step({"A": real_a, "B": real_b}, optimizers, Accelerator(cpu=True))
    assert {"D_R1", "idt", "NCE", "G_GAN"} <= set(losses) and all(torch.isfinite(v) for v in losses.values())
    reset_accelerate()
    monkeypatch.setitem(train.OBJECTIVES, "cut", WithExtras)
    out = tmp_path / "o"
    assert run_main(["--data-dir", str(data_dir), "--output-dir", str(out), *TINY, "--max-steps", "1",
                     "--report-to", "none", "--checkpoint-every", "0"]) == 0
    card = (out / "generator" / "README.md").read_text()
    assert "D_R1 (mean of last 1 steps)" in card and "idt (mean of last 1 steps)" in card


def test_linear_decay_is_the_papers():
    from cut_hf.training.optim import linear_decay

    rule = linear_decay(n_epochs=3, n_epochs_decay=2)
    # epochs 1-3 at lr, then 2/3, 1/3 of it (the official 1 - max(0, e + 1 - n) / (decay + 1)).
    assert [rule(e) for e in range(5)] == pytest.approx([1, 1, 1, 2 / 3, 1 / 3])


def test_mode_presets_and_overrides():
    cut = train.parse_args(["--data-dir", "x"])
    assert (cut.lambda_nce, cut.nce_idt, cut.flip_equivariance, cut.n_epochs, cut.n_epochs_decay) == (1.0, True, False, 200, 200)
    assert (cut.lr, cut.beta1, cut.beta2, cut.nce_t, cut.num_patches, cut.batch_size, cut.gan_mode) == (
        2e-4, 0.5, 0.999, 0.07, 256, 1, "lsgan")
    assert cut.nce_layers == (0, 4, 8, 12, 16) and cut.reuse_features
    fast = train.parse_args(["--data-dir", "x", "--mode", "fastcut"])
    assert (fast.lambda_nce, fast.nce_idt, fast.flip_equivariance, fast.n_epochs, fast.n_epochs_decay) == (10.0, False, True, 150, 50)
    over = train.parse_args(["--data-dir", "x", "--mode", "fastcut", "--lambda-nce", "2", "--nce-idt", "--n-epochs", "7"])
    assert (over.lambda_nce, over.nce_idt, over.n_epochs) == (2.0, True, 7)
    assert cut.lambda_identity == fast.lambda_identity == 0.0 and not cut.residual  # the paper's: no L1 term
    with pytest.raises(SystemExit):
        train.parse_args(["--data-dir", "x", "--mode", "fastcut", "--lambda-identity", "1"])  # needs --nce-idt
    with pytest.raises(SystemExit):
        train.parse_args(["--data-dir", "x", "--input-nc", "1"])  # identity loss needs equal channels
    with pytest.raises(SystemExit):
        train.parse_args(["--data-dir", "x", "--push-to-hub"])  # no --hub-model-id


# ----------------------------------------------------------------------------- end to end


def _event_tags(log_dir: Path) -> tuple[set[str], set[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars, images = set(), set()
    for events in log_dir.rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events.parent), size_guidance={"images": 0, "scalars": 0})
        acc.Reload()
        scalars |= set(acc.Tags()["scalars"])
        images |= set(acc.Tags()["images"])
    return scalars, images


def test_end_to_end_outputs_card_tensorboard_and_reload(data_dir: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    rc = run_main(["--data-dir", str(data_dir), "--output-dir", str(out), *TINY, "--max-steps", "4",
                   "--checkpoint-every", "2", "--keep-checkpoints", "1", "--sample-every", "2", "--log-every", "1"])
    assert rc == 0, capsys.readouterr().err
    gen = out / "generator"
    assert {"config.json", "model.safetensors", "README.md", "samples.png"} <= {p.name for p in gen.iterdir()}
    for sub in ("sampler", "discriminator"):
        assert {"config.json", "model.safetensors"} <= {p.name for p in (out / sub).iterdir()}
    # Reload strictly; the weights are the trained ones (equal to the last checkpoint's G).
    g = CUTGenerator.from_pretrained(gen, strict=True)
    assert g.ngf == 8 and g.n_blocks == 2
    ckpts = CheckpointManager(out / "checkpoints").complete()
    assert [p.name for p in ckpts] == ["checkpoint-4"]  # keep-last-1 pruned checkpoint-2 (named by step)
    saved = load_file(ckpts[0] / "model.safetensors")  # the GeneratorWithFeatures wrapper
    for k, v in g.state_dict().items():
        assert torch.equal(v, saved[f"generator.{k}"]), k
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert g(x).shape == (1, 3, 32, 32)
    sampler = PatchSampler.from_pretrained(out / "sampler", strict=True)
    assert sampler.in_channels == g.feature_channels() and sampler.nc == 16
    PatchDiscriminator.from_pretrained(out / "discriminator", strict=True)
    card = (gen / "README.md").read_text()
    for text in ("library_name: cut-hf", "| mode | CUT |", "| steps | 4 |", "| precision | fp32 |",
                 "image size | 32", "G_GAN (mean of last 4 steps)", "NCE_Y", "![samples](samples.png)", "--max-steps 4"):
        assert text in card, text
    assert "{{" not in card
    with Image.open(gen / "samples.png") as grid:  # 4 columns: real_A | fake_B | real_B | idt_B
        assert grid.width > 4 * 32 and grid.height >= 32
    state = json.loads((ckpts[0] / "trainer_state.json").read_text())
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (4, 0, 4)
    scalars, images = _event_tags(out / "logs")
    assert {"G_GAN", "D_real", "D_fake", "NCE", "NCE_Y", "lr"} <= scalars
    assert "samples" in images
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step_00000002.png", "step_00000004.png"]
    assert "identity L1" not in card and "residual generator" not in card  # the paper's recipe


def test_residual_identity_run_saves_loads_and_says_so(data_dir: Path, tmp_path: Path, capsys):
    out = tmp_path / "res"
    rc = run_main(["--data-dir", str(data_dir), "--output-dir", str(out), *TINY, "--max-steps", "2",
                   "--residual", "--lambda-identity", "0.5", "--n-layers-d", "2", "--report-to", "none"])
    assert rc == 0, capsys.readouterr().err
    g = CUTGenerator.from_pretrained(out / "generator", strict=True)
    assert g.residual
    card = (out / "generator" / "README.md").read_text()
    assert "identity L1 |G(B) - B| (lambda_identity) | 0.5 |" in card and "residual generator" in card


def test_resume_is_bit_identical_and_counter_continues(data_dir: Path, tmp_path: Path):
    """2n steps straight == n steps, resume, n steps: same weights to the bit (CPU, fp32).

    5 A images -> 5 steps per epoch: the first run stops mid-epoch (step 3) and the resumed one
    crosses the epoch boundary, where the lr drops (n_epochs 1 + 1 decay)."""
    common = ["--data-dir", str(data_dir), *TINY, "--checkpoint-every", "3", "--report-to", "none"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert run_main([*common, "--output-dir", str(straight), "--max-steps", "6"]) == 0
    assert run_main([*common, "--output-dir", str(split), "--max-steps", "3"]) == 0
    assert [p.name for p in CheckpointManager(split / "checkpoints").complete()] == ["checkpoint-3"]
    assert run_main([*common, "--output-dir", str(split), "--max-steps", "6", "--resume", "latest"]) == 0
    names = [p.name for p in CheckpointManager(split / "checkpoints").complete()]
    assert names == ["checkpoint-3", "checkpoint-6"]  # named by step
    state = json.loads((split / "checkpoints" / "checkpoint-6" / "trainer_state.json").read_text())
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (6, 1, 1)
    for sub in ("generator", "sampler", "discriminator"):
        a, b = load_file(straight / sub / "model.safetensors"), load_file(split / sub / "model.safetensors")
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{sub}.{k}"
    # The optimiser and lr schedule match too (the lr dropped at the epoch boundary).
    sa = torch.load(straight / "checkpoints" / "checkpoint-6" / "scheduler.bin", weights_only=False)
    sb = torch.load(split / "checkpoints" / "checkpoint-6" / "scheduler.bin", weights_only=False)
    assert sa["last_epoch"] == sb["last_epoch"] == 1 and sa["_last_lr"] == sb["_last_lr"] == [1e-4, 1e-4]


def test_resume_rejects_incomplete_and_foreign_checkpoints(data_dir: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    common = ["--data-dir", str(data_dir), "--output-dir", str(out), *TINY, "--report-to", "none"]
    assert run_main([*common, "--max-steps", "1", "--checkpoint-every", "1"]) == 0
    good = out / "checkpoints" / "checkpoint-1"
    broken = out / "checkpoints" / "checkpoint_7"
    shutil.copytree(good, broken)
    (broken / COMPLETE_MARKER).unlink()  # what a copy interrupted half-way looks like
    capsys.readouterr()
    assert run_main([*common, "--max-steps", "2", "--resume", str(broken)]) == 1
    assert "incomplete" in capsys.readouterr().err
    assert CheckpointManager(out / "checkpoints").latest() == good  # "latest" ignores it
    assert run_main([*common, "--ngf", "4", "--max-steps", "2", "--resume", "latest"]) == 1
    err = capsys.readouterr().err
    assert "other model settings" in err and "'ngf': (8, 4)" in err


class _FakeAccelerator:
    """Just what CheckpointManager.save uses, single process."""

    is_main_process = True

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def wait_for_everyone(self) -> None:
        pass

    def save_state(self, path: str) -> None:
        Path(path, "model.safetensors").write_bytes(b"weights")
        if self.fail:
            raise KeyboardInterrupt("killed while saving")
        Path(path, "optimizer.bin").write_bytes(b"adam")


def test_checkpoint_killed_mid_save_never_looks_complete(tmp_path: Path):
    mgr = CheckpointManager(tmp_path / "ckpt", keep=2)
    mgr.save(_FakeAccelerator(), {"step": 1}, 1)
    with pytest.raises(KeyboardInterrupt):
        mgr.save(_FakeAccelerator(fail=True), {"step": 2}, 2)
    assert [p.name for p in mgr.complete()] == ["checkpoint-1"]
    assert not (tmp_path / "ckpt" / "checkpoint-2").exists()
    assert [p.name for p in mgr.remove_stale()] == [".tmp-checkpoint-2"]
    for i in (2, 3, 4):
        mgr.save(_FakeAccelerator(), {"step": i}, i)
    assert [p.name for p in mgr.complete()] == ["checkpoint-3", "checkpoint-4"]  # keep last 2
    assert mgr.read_state(mgr.latest())["step"] == 4
    assert (mgr.latest() / COMPLETE_MARKER).read_text() == "step 4\n"
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        mgr.resolve(str(tmp_path / "nope"))


def test_fastcut_bf16_grayscale_from_hf_dataset(tmp_path: Path, capsys):
    """Another path through main(): a 🤗 save_to_disk dataset, FastCUT, bf16 on the CPU, 1 channel."""
    datasets = pytest.importorskip("datasets")
    a = make_images(tmp_path / "imgs", 3, seed=4, prefix="a")
    b = make_images(tmp_path / "imgs", 2, seed=5, prefix="b")
    ds = datasets.Dataset.from_dict({"imageA": [str(p) for p in a], "imageB": [str(p) for p in b] + [None]},
                                    features=datasets.Features({"imageA": datasets.Image(), "imageB": datasets.Image()}))
    ds.save_to_disk(str(tmp_path / "ds"))
    out = tmp_path / "out"
    rc = run_main(["--dataset", str(tmp_path / "ds"), "--output-dir", str(out), *TINY, "--mode", "fastcut",
                   "--mixed-precision", "bf16", "--input-nc", "1", "--output-nc", "1", "--max-steps", "2",
                   "--report-to", "none", "--checkpoint-every", "0"])
    assert rc == 0, capsys.readouterr().err
    g = CUTGenerator.from_pretrained(out / "generator", strict=True)
    assert g.input_nc == 1 and g.output_nc == 1
    assert all(torch.isfinite(p).all() for p in g.parameters())
    card = (out / "generator" / "README.md").read_text()
    assert "| mode | FastCUT |" in card and "| precision | bf16 |" in card and "NCE_Y" not in card


def test_data_errors_stop_before_training(tmp_path: Path, capsys):
    root = tmp_path / "data"
    make_images(root / "trainA", 2)
    (root / "trainB").mkdir()
    assert run_main(["--data-dir", str(root), "--output-dir", str(tmp_path / "o"), *TINY]) == 1
    assert "domain B" in capsys.readouterr().err
    assert not (tmp_path / "o" / "generator").exists()
    make_images(root / "trainB", 1)
    assert run_main(["--data-dir", str(root), "--output-dir", str(tmp_path / "o"), *TINY, "--batch-size", "2"]) == 1
    assert "fewer than one batch" in capsys.readouterr().err
    assert run_main(["--data-dir", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "o"), *TINY]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_a_domain_with_no_readable_image_stops_before_anything_is_written(tmp_path: Path, capsys, monkeypatch):
    """Once a DataLoader worker's traceback, after OUTPUT/logs/ was made: now one line, nothing written."""
    root = tmp_path / "data"
    make_images(root / "trainA", 2)
    (root / "trainB").mkdir()
    (root / "trainB" / "only.png").write_text("not an image")
    monkeypatch.chdir(tmp_path)
    assert run_main(["--data-dir", str(root), "--output-dir", "o", *TINY]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: domain B") and err.count("\n") == 1
    assert "no readable image" in err and "only.png" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no output folder, no logs/


def test_unreadable_files_are_skipped_and_counted(data_dir: Path, tmp_path: Path, caplog):
    (data_dir / "trainA" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    good = (data_dir / "trainA" / "a_0.png").read_bytes()
    (data_dir / "trainA" / "truncated.png").write_bytes(good[: len(good) // 2])
    args = train.parse_args(["--data-dir", str(data_dir), "--output-dir", str(tmp_path / "o"), *TINY,
                             "--max-steps", "7", "--report-to", "none", "--checkpoint-every", "0"])
    try:
        summary = train.run(args)  # 7 A files -> one epoch of 7 steps visits both bad ones
    finally:
        reset_accelerate()
    assert summary["step"] == 7 and summary["skipped_files"] == 2
    assert "skipping unreadable image" in caplog.text and "truncated.png" in caplog.text
    assert "unreadable files skipped | 2" in (tmp_path / "o" / "generator" / "README.md").read_text()


def test_nan_loss_stops_with_step_and_term(data_dir: Path, tmp_path: Path, monkeypatch, capsys):
    calls = {"n": 0}
    import cut_hf.objectives.cut as cut_objective

    real = cut_objective.gan_loss

    def poisoned(pred, target_is_real, mode="lsgan"):
        calls["n"] += 1  # 3 calls per step: D_fake, D_real, G_GAN
        loss = real(pred, target_is_real, mode)
        return loss * float("nan") if calls["n"] == 4 else loss

    monkeypatch.setattr(cut_objective, "gan_loss", poisoned)
    rc = run_main(["--data-dir", str(data_dir), "--output-dir", str(tmp_path / "o"), *TINY, "--max-steps", "4",
                   "--report-to", "none"])
    assert rc == 1
    assert "step 2: loss D_fake is nan" in capsys.readouterr().err
    assert not (tmp_path / "o" / "generator").exists()


def test_skipped_fp16_steps_are_counted_not_fatal(data_dir: Path, tmp_path: Path, monkeypatch):
    """What a GradScaler overflow looks like to the loop (this CPU has no fp16 scaler): counted."""
    from accelerate.optimizer import AcceleratedOptimizer

    monkeypatch.setattr(AcceleratedOptimizer, "step_was_skipped", property(lambda self: len(self.param_groups) == 1))
    args = train.parse_args(["--data-dir", str(data_dir), "--output-dir", str(tmp_path / "o"), *TINY,
                             "--max-steps", "3", "--report-to", "none", "--checkpoint-every", "0"])
    try:
        summary = train.run(args)
    finally:
        reset_accelerate()
    assert summary["step"] == 3 and summary["skipped_steps_D"] == 3 and summary["skipped_steps_G"] == 0


def test_fp16_on_cpu_is_a_clear_error_and_simclr_gets_the_command_line(tmp_path: Path, monkeypatch, capsys):
    assert run_main(["--data-dir", str(tmp_path), "--mixed-precision", "fp16", *TINY]) == 1
    assert "fp16 needs a GPU" in capsys.readouterr().err
    # --task simclr: SimCLR's own parser gets the whole command line (SimCLR flags included).
    seen = []
    fake = type(sys)("cut_hf.cli.simclr_train")
    fake.main = lambda argv: seen.append(argv) or 0
    monkeypatch.setitem(sys.modules, "cut_hf.cli.simclr_train", fake)
    assert train.main(["--task", "simclr", "--data", "imgs", "--backbone", "resnet18"]) == 0
    assert seen == [["--task", "simclr", "--data", "imgs", "--backbone", "resnet18"]]


def test_push_to_hub_makes_one_commit_of_generator_sampler_discriminator(data_dir: Path, tmp_path: Path,
                                                                          monkeypatch):
    import huggingface_hub

    LocalHub.reset(tmp_path / "hub")
    monkeypatch.setattr(huggingface_hub, "HfApi", LocalHub)
    rc = run_main(["--data-dir", str(data_dir), "--output-dir", str(tmp_path / "o"), *TINY, "--max-steps", "1",
                   "--report-to", "none", "--push-to-hub", "--hub-model-id", "someone/tiny-cut", "--private",
                   "--hub-endpoint", "http://127.0.0.1:9"])
    assert rc == 0
    (api,) = LocalHub.instances
    assert api.endpoint == "http://127.0.0.1:9"
    assert [c[0] for c in api.calls] == ["create_repo", "create_commit"]  # one commit for all three models
    assert api.calls[0] == ("create_repo", "someone/tiny-cut", True, True)
    repo = tmp_path / "hub" / "someone" / "tiny-cut"
    CUTGenerator.from_pretrained(repo, strict=True)
    PatchSampler.from_pretrained(repo / "sampler", strict=True)
    PatchDiscriminator.from_pretrained(repo / "discriminator", strict=True)
    assert 'CUTGenerator.from_pretrained("someone/tiny-cut")' in (repo / "README.md").read_text()
