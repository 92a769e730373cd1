"""Pushes and cards the Hub reads (issue 20, points 5 and 6; issue 22, point 5): one commit per push with
stale files deleted, a failed push leaves the repository as it was and says how to retry, checkpoints
upload in the background, and the card carries datasets:, model-index (from --eval-every and from
cut-hf evaluate --update-card) as huggingface_hub's card data."""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import ModelCard

import cut_hf.data.sources as sources
from cut_hf.__main__ import main as cut_hf_main
from tests.helpers import LocalHub, make_images
from tests.training.test_train import TINY, _one_thread_and_fresh_accelerate, run_main  # noqa: F401

datasets = pytest.importorskip("datasets")
REPO = "someone/h2z"


@pytest.fixture
def hub(tmp_path: Path, monkeypatch) -> Path:
    """A stand-in Hub (HfApi replaced); returns the folder of REPO on it."""
    import huggingface_hub

    LocalHub.reset(tmp_path / "hub")
    monkeypatch.setattr(huggingface_hub, "HfApi", LocalHub)
    return tmp_path / "hub" / REPO


@pytest.fixture
def hub_dataset(tmp_path: Path, monkeypatch) -> str:
    """"someone/horses2zebras" on the Hub (read offline from a save_to_disk copy), with test folders."""
    a = make_images(tmp_path / "imgs", 3, size=(36, 36), seed=1, prefix="a")
    b = make_images(tmp_path / "imgs", 3, size=(36, 36), seed=2, prefix="b")
    make_images(tmp_path / "h2z" / "testA", 2, size=(36, 36), seed=3, prefix="ta")
    make_images(tmp_path / "h2z" / "testB", 2, size=(36, 36), seed=4, prefix="tb")
    features = datasets.Features({"imageA": datasets.Image(), "imageB": datasets.Image()})
    datasets.Dataset.from_dict({"imageA": [str(p) for p in a], "imageB": [str(p) for p in b]},
                               features=features).save_to_disk(str(tmp_path / "disk"))
    real = sources.open_hf_dataset
    monkeypatch.setattr(sources, "open_hf_dataset", lambda name, *args: real(
        str(tmp_path / "disk") if name == "someone/horses2zebras" else name, *args))
    return "someone/horses2zebras"


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_eval_every_and_push_make_one_commit_whose_card_has_model_index_and_datasets(hub, hub_dataset, tmp_path):
    out = tmp_path / "out"
    assert run_main(["--dataset", hub_dataset, "--output-dir", str(out), *TINY, "--max-steps", "2",
                     "--eval-every", "2", "--eval-dir", f"{tmp_path}/h2z/testA:{tmp_path}/h2z/testB",
                     "--eval-feature-extractor", "tiny", "--report-to", "none", "--checkpoint-every", "0",
                     "--push-to-hub", "--hub-model-id", REPO]) == 0
    (api,) = LocalHub.instances
    assert [c[0] for c in api.calls] == ["create_repo", "create_commit"]  # G, F, D and the card: one commit
    card = ModelCard.load(hub / "README.md")
    assert card.data.datasets == [hub_dataset]
    assert card.data.model_name == REPO
    scores = {r.metric_type: r for r in card.data.eval_results}
    assert set(scores) == {"fid", "kid"} and scores["fid"].dataset_name == "h2z/testB"
    assert scores["fid"].task_type == "image-to-image" and scores["fid"].metric_value >= 0
    assert "model-index:" in (hub / "README.md").read_text()
    assert (hub / "sampler" / "model.safetensors").is_file() and (hub / "discriminator" / "config.json").is_file()
    # cut-hf evaluate --update-card adds its scores beside them (another dataset name: both kept).
    rc = cut_hf_main(["evaluate", "--model", str(out), "--input", f"{tmp_path}/h2z/testA",
                      "--reference", f"{tmp_path}/h2z/testB", "--size", "32", "--feature-extractor", "tiny",
                      "--kid-subset-size", "2", "--update-card", "--dataset-name", "horse2zebra test"])
    assert rc == 0
    local = ModelCard.load(out / "generator" / "README.md")
    assert {(r.dataset_name, r.metric_type) for r in local.data.eval_results} == {
        ("h2z/testB", "fid"), ("h2z/testB", "kid"), ("horse2zebra test", "fid"), ("horse2zebra test", "kid")}


def test_failed_push_leaves_the_repo_as_it_was_and_says_how_to_retry(hub, tmp_path, capsys):
    data = tmp_path / "data"
    make_images(data / "trainA", 3, size=(36, 36), seed=1, prefix="a")
    make_images(data / "trainB", 3, size=(36, 36), seed=2, prefix="b")
    flags = ["--data-dir", str(data), *TINY, "--max-steps", "1", "--report-to", "none", "--checkpoint-every", "0",
             "--push-to-hub", "--hub-model-id", REPO]
    assert run_main([*flags, "--output-dir", str(tmp_path / "first")]) == 0
    (hub / "old-notes.txt").write_text("a file the outputs no longer have")
    (hub / "checkpoints" / "checkpoint-9").mkdir(parents=True)
    (hub / "checkpoints" / "checkpoint-9" / "trainer_state.json").write_text("{}")
    before = _files(hub)

    LocalHub.fail_at = 1  # the second commit fails halfway through its files
    out = tmp_path / "second"
    assert run_main([*flags, "--output-dir", str(out), "--seed", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: push to {REPO} failed (connection reset by peer")
    assert "the repository is unchanged" in err and f"retry with `cut-hf push {out} --hub-model-id {REPO}`" in err
    assert _files(hub) == before  # nothing of the failed push landed
    local = _files(out / "generator")
    assert {"model.safetensors", "config.json", "README.md"} <= set(local)  # the outputs are intact

    LocalHub.fail_at = None  # the retry the message names
    assert cut_hf_main(["push", str(out), "--hub-model-id", REPO]) == 0
    after = _files(hub)
    assert {k: after[k] for k in local} == local
    assert after["sampler/model.safetensors"] == (out / "sampler" / "model.safetensors").read_bytes()
    assert "old-notes.txt" not in after  # stale files go in the same commit
    assert "checkpoints/checkpoint-9/trainer_state.json" in after  # --push-checkpoints' uploads stay


def test_push_checkpoints_uploads_each_checkpoint_in_the_background(hub, tmp_path):
    data = tmp_path / "data"
    make_images(data / "trainA", 3, size=(36, 36), seed=1, prefix="a")
    make_images(data / "trainB", 3, size=(36, 36), seed=2, prefix="b")
    assert run_main(["--data-dir", str(data), "--output-dir", str(tmp_path / "o"), *TINY, "--max-steps", "3",
                     "--report-to", "none", "--checkpoint-every", "1", "--keep-checkpoints", "2", "--push-to-hub",
                     "--push-checkpoints", "--hub-model-id", REPO]) == 0
    messages = [c[1] for c in LocalHub.commits]
    assert messages == ["Upload checkpoint checkpoint-1", "Upload checkpoint checkpoint-2",
                        "Upload checkpoint checkpoint-3", "Upload model trained with cut-hf"]  # in order, models last
    remote = _files(hub)
    assert {k.split("/")[1] for k in remote if k.startswith("checkpoints/")} == {"checkpoint-2", "checkpoint-3"}
    assert remote["checkpoints/checkpoint-3/model.safetensors"] == (
        tmp_path / "o" / "checkpoints" / "checkpoint-3" / "model.safetensors").read_bytes()
    assert "model.safetensors" in remote


def test_push_checkpoints_needs_push_to_hub(capsys):
    import cut_hf.cli.train as train

    with pytest.raises(SystemExit):
        train.parse_args(["--data-dir", "x", "--push-checkpoints"])
    assert "--push-checkpoints uploads to the --push-to-hub repository" in capsys.readouterr().err


def test_simclr_card_names_its_hub_dataset(hub_dataset, tmp_path, monkeypatch):
    import cut_hf.training.tasks.simclr as simclr

    monkeypatch.setattr(simclr, "open_hf_dataset", sources.open_hf_dataset)  # the stand-in Hub dataset
    out = tmp_path / "simclr"
    assert run_main(["--task", "simclr", "--dataset", hub_dataset, "--column", "imageA", "--output-dir", str(out),
                     "--backbone", "resnet18", "--cifar-stem", "--proj-dim", "8", "--image-size", "16",
                     "--batch-size", "2", "--num-workers", "0", "--max-steps", "1", "--report-to", "none",
                     "--checkpoint-every", "0"]) == 0
    assert ModelCard.load(out / "model" / "README.md").data.datasets == [hub_dataset]
