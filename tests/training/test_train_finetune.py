"""train.py --init-from (issue 20, point 3): a run starts from a model's G (and its F and D), takes its
architecture from the model's configs, refuses conflicting flags and --resume, and its card names the source."""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import ModelCard

import cut_hf.cli.train as train
import cut_hf.training.finetune as finetune
from cut_hf import CUTGenerator
from cut_hf.training.logs import weights_digest
from tests.helpers import make_images
from tests.training.test_train import TINY, _one_thread_and_fresh_accelerate, run_main  # noqa: F401

# No architecture flags: they come from --init-from's config.json files.
FINETUNE = ["--load-size", "36", "--crop-size", "32", "--num-patches", "16", "--num-workers", "0",
            "--n-epochs", "1", "--n-epochs-decay", "1", "--report-to", "none", "--checkpoint-every", "0"]


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A finished tiny run (non-default widths everywhere), and its data."""
    data = tmp_path / "data"
    make_images(data / "trainA", 3, size=(36, 36), seed=1, prefix="a")
    make_images(data / "trainB", 3, size=(36, 36), seed=2, prefix="b")
    out = tmp_path / "run"
    assert run_main(["--data-dir", str(data), "--output-dir", str(out), *TINY, "--n-layers-d", "2", "--max-steps", "2",
                     "--report-to", "none", "--checkpoint-every", "0"]) == 0
    return out


def _digests(out: Path) -> dict[str, str]:
    from cut_hf import PatchDiscriminator, PatchSampler

    return {"generator": weights_digest(CUTGenerator.from_pretrained(out / "generator")),
            "sampler": weights_digest(PatchSampler.from_pretrained(out / "sampler")),
            "discriminator": weights_digest(PatchDiscriminator.from_pretrained(out / "discriminator"))}


def test_init_from_a_run_with_lr_0_keeps_every_network_bit_identical(run_dir: Path, tmp_path: Path):
    data = tmp_path / "data"
    out = tmp_path / "tuned"
    assert run_main(["--data-dir", str(data), "--output-dir", str(out), *FINETUNE, "--init-from", str(run_dir),
                     "--lr", "0", "--max-steps", "2"]) == 0
    assert _digests(out) == _digests(run_dir)  # G, F and D all started from the run's (lr 0: unchanged)
    g = CUTGenerator.from_pretrained(out / "generator")
    assert (g.ngf, g.n_blocks) == (8, 2)  # from the source's config, not the flags' defaults (64, 9)
    card = ModelCard.load(out / "generator" / "README.md")
    assert f"Fine-tuned from `{run_dir}`" in card.text
    assert card.data.base_model is None  # a local folder is no Hub id
    # With a learning rate the fine-tuned generator moves away from its start.
    assert run_main(["--data-dir", str(data), "--output-dir", str(tmp_path / "moved"), *FINETUNE,
                     "--init-from", str(run_dir / "generator"), "--max-steps", "1"]) == 0
    assert _digests(tmp_path / "moved")["generator"] != _digests(run_dir)["generator"]


def test_init_from_a_hub_id_names_the_base_model(run_dir: Path, tmp_path: Path, monkeypatch):
    """A Hub repository as train.py pushes it (generator at the root, sampler/ and discriminator/)."""
    real = finetune.resolve_model_dir

    def hub(model_id, subfolder=None, **kwargs):  # "someone/h2z" is run_dir on a stand-in Hub
        if model_id == "someone/h2z":
            return run_dir / (subfolder or "generator")
        return real(model_id, subfolder, **kwargs)

    monkeypatch.setattr(finetune, "resolve_model_dir", hub)
    out = tmp_path / "tuned"
    assert run_main(["--data-dir", str(tmp_path / "data"), "--output-dir", str(out), *FINETUNE,
                     "--init-from", "someone/h2z", "--lr", "0", "--max-steps", "1"]) == 0
    assert ModelCard.load(out / "generator" / "README.md").data.base_model == "someone/h2z"
    assert _digests(out) == _digests(run_dir)


def test_conflicting_flags_resume_and_missing_sources_are_usage_errors(run_dir: Path, tmp_path: Path, capsys):
    base = ["--data-dir", str(tmp_path / "data"), "--init-from", str(run_dir)]
    with pytest.raises(SystemExit):
        train.parse_args([*base, "--ngf", "16"])
    assert "--ngf 16 (the model has 8)" in capsys.readouterr().err
    assert train.parse_args([*base, "--ngf", "8"]).ngf == 8  # the same value is no conflict
    with pytest.raises(SystemExit):
        train.parse_args([*base, "--resume", "latest"])
    assert "--resume continues a run" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.parse_args(["--data-dir", "x", "--init-from", str(tmp_path / "nowhere")])
    assert "--init-from" in capsys.readouterr().err
