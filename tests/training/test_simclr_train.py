"""SimCLR training (LARS, schedule, end-to-end run, exact resume, Hub upload, data errors) and evaluation."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from cut_hf import SimCLR
from cut_hf.evaluation.simclr import knn_predict, load_labelled
from cut_hf.cli.evaluate_simclr import main as evaluate_main
from cut_hf.training.optim import LARS, param_groups, warmup_cosine
from cut_hf.cli.simclr_train import main
from tests.helpers import LocalHub



def _reset_accelerate() -> None:
    """Accelerate keeps process-wide state; each in-process run (and other test files) starts afresh."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: on a loaded 2-core machine, two threads per process wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_main(argv: list[str]) -> int:
    try:
        return main(argv)
    finally:
        _reset_accelerate()


# ----------------------------------------------------------------------------- LARS and the schedule


def test_lars_matches_a_hand_computation():
    w = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))  # ||w|| = 5
    b = torch.nn.Parameter(torch.tensor([1.0]))
    opt = LARS([{"params": [w], "weight_decay": 0.1, "lars_adaptation": True},
                {"params": [b], "weight_decay": 0.0, "lars_adaptation": False}],
               lr=0.5, momentum=0.9, weight_decay=0.1, eta=0.01)
    w.grad, b.grad = torch.tensor([[0.0, 0.6]]), torch.tensor([2.0])
    opt.step()
    # weights: g = [0, .6] + .1 * [3, 4] = [.3, 1.0]; ||g|| = sqrt(1.09); trust = .01 * 5 / sqrt(1.09)
    g = np.array([0.3, 1.0])
    trust = 0.01 * 5 / math.sqrt(1.09)
    v1 = 0.5 * trust * g
    expected_w = np.array([3.0, 4.0]) - v1
    assert np.allclose(w.detach().numpy()[0], expected_w, atol=1e-6)
    # bias: excluded from adaptation and decay: plain momentum SGD, v = lr * g
    assert torch.allclose(b.detach(), torch.tensor([1.0 - 0.5 * 2.0]))
    # second step: momentum carries the first update
    w.grad, b.grad = torch.tensor([[0.0, 0.6]]), torch.tensor([2.0])
    opt.step()
    g2 = np.array([0.0, 0.6]) + 0.1 * expected_w
    trust2 = 0.01 * np.linalg.norm(expected_w) / np.linalg.norm(g2)
    v2 = 0.9 * v1 + 0.5 * trust2 * g2
    assert np.allclose(w.detach().numpy()[0], expected_w - v2, atol=1e-6)
    assert torch.allclose(b.detach(), torch.tensor([0.0 - (0.9 * 1.0 + 1.0)]))


def test_lars_zero_weights_use_trust_one():
    w = torch.nn.Parameter(torch.zeros(3))
    opt = LARS([w], lr=0.1, momentum=0.0, eta=0.001)
    w.grad = torch.ones(3)
    opt.step()
    assert torch.allclose(w.detach(), torch.full((3,), -0.1))


def test_param_groups_exclude_biases_and_norms():
    model = SimCLR(backbone="resnet18", proj_dim=8, cifar_stem=True)
    decay, no_decay = param_groups(model, 1e-6)
    named = dict(model.named_parameters())
    ids = {id(p) for p in no_decay["params"]}
    assert all(id(named[n]) in ids for n in ("encoder.bn1.weight", "encoder.bn1.bias", "projector.0.bias"))
    assert id(named["encoder.conv1.weight"]) not in ids and id(named["projector.2.weight"]) not in ids
    assert no_decay["weight_decay"] == 0.0 and not no_decay["lars_adaptation"]
    assert decay["weight_decay"] == 1e-6 and decay["lars_adaptation"]
    assert len(decay["params"]) + len(no_decay["params"]) == len(named)


def test_warmup_then_cosine():
    f = warmup_cosine(4, 12)
    assert [f(i) for i in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == 1.0 and f(8) == pytest.approx(0.5) and f(12) == pytest.approx(0.0)
    assert all(f(i) >= f(i + 1) for i in range(4, 12))


# ----------------------------------------------------------------------------- end to end


def _pattern(i: int, size: int = 20) -> Image.Image:
    """Distinct little images: a coloured background with a square at an image-specific place."""
    rng = np.random.default_rng(i)
    arr = np.empty((size, size, 3), np.uint8)
    arr[:] = rng.integers(0, 256, 3)
    y, x = rng.integers(0, size // 2, 2)
    arr[y:y + size // 2, x:x + size // 2] = rng.integers(0, 256, 3)
    return Image.fromarray(arr)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """12 readable images in nested folders (searched recursively) and one corrupt file."""
    root = tmp_path_factory.mktemp("simclr_images")
    for i in range(12):
        sub = root / f"part{i % 2}" / "deeper"
        sub.mkdir(parents=True, exist_ok=True)
        _pattern(i).convert("RGBA" if i == 3 else "RGB").save(sub / f"img{i:02d}.png")
    (root / "part0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


@pytest.fixture(scope="module")
def labelled_folder(tmp_path_factory) -> Path:
    """Two classes told apart by colour: red-ish and blue-ish images, train/test."""
    root = tmp_path_factory.mktemp("labelled")
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 3)):
        for name, channel in (("red", 0), ("blue", 2)):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                arr = rng.integers(0, 60, (20, 20, 3)).astype(np.uint8)
                arr[..., channel] = rng.integers(180, 256, (20, 20))
                Image.fromarray(arr).save(folder / f"{i}.png")
    return root


def _flags(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--data", str(data), "--output-dir", str(out), "--backbone", "resnet18", "--cifar-stem",
            "--proj-dim", "16", "--image-size", "16", "--batch-size", "4", "--num-workers", "0", "--seed", "3",
            "--log-every", "1", *extra]


@pytest.fixture(scope="module")
def trained(image_folder, labelled_folder, tmp_path_factory):
    """One 4-step run (checkpoints at 2 and 4, tracker, evaluation, upload to a stand-in Hub)."""
    import huggingface_hub

    out = tmp_path_factory.mktemp("run") / "out"
    LocalHub.reset(tmp_path_factory.mktemp("hub"))
    mp = pytest.MonkeyPatch()
    mp.setattr(huggingface_hub, "HfApi", LocalHub)
    try:
        code = run_main(_flags(image_folder, out, "--max-steps", "4", "--checkpoint-every", "2", "--sample-every", "2",
                           "--eval-data", str(labelled_folder), "--push-to-hub", "--hub-model-id", "me/simclr-tiny"))
    finally:
        mp.undo()
    assert code == 0
    return out


def test_training_writes_model_card_checkpoints_and_logs(trained):
    model_dir = trained / "model"
    assert {"config.json", "model.safetensors", "README.md", "views.png"} <= {p.name for p in model_dir.iterdir()}
    card = (model_dir / "README.md").read_text()
    assert "pipeline_tag: image-feature-extraction" in card
    assert "| steps | 4 |" in card and "adamw" in card and "kNN top-1" in card and "linear probe top-1" in card
    assert "unreadable files skipped | 1 |" in card  # the corrupt file was met and passed over
    assert sorted(p.name for p in (trained / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    assert json.loads((trained / "checkpoints" / "checkpoint-4" / "trainer_state.json").read_text())["step"] == 4
    assert list((trained / "logs").rglob("events.out.tfevents*")), "no TensorBoard log"
    loaded = SimCLR.from_pretrained(model_dir, strict=True)
    assert (loaded.backbone, loaded.proj_dim, loaded.cifar_stem) == ("resnet18", 16, True)
    torch.manual_seed(3)  # the run's seed: the initial weights
    init = SimCLR(backbone="resnet18", proj_dim=16, cifar_stem=True).state_dict()
    assert not torch.equal(init["encoder.conv1.weight"], loaded.state_dict()["encoder.conv1.weight"])


def test_push_to_hub_uploads_the_model_folder(trained):
    (api,) = LocalHub.instances
    assert [c[:2] for c in api.calls] == [("create_repo", "me/simclr-tiny"), ("create_commit", "me/simclr-tiny")]
    assert (LocalHub.root / "me/simclr-tiny" / "model.safetensors").is_file()


def test_resume_continues_exactly(trained, image_folder, labelled_folder, tmp_path):
    """4 steps straight == 2 steps, checkpoint, resume, 2 more steps (bit-identical, mid-epoch resume)."""
    out = tmp_path / "resumed"
    (out / "checkpoints").mkdir(parents=True)
    shutil.copytree(trained / "checkpoints" / "checkpoint-2", out / "checkpoints" / "checkpoint-2")  # step 2 of 3/epoch
    assert run_main(_flags(image_folder, out, "--max-steps", "4", "--checkpoint-every", "2", "--resume", "latest",
                       "--report-to", "none")) == 0
    straight = load_file(trained / "model" / "model.safetensors")
    resumed = load_file(out / "model" / "model.safetensors")
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]  # named by step


def test_resume_refuses_other_architectures_and_incomplete_checkpoints(trained, image_folder, tmp_path, capsys):
    ckpt = trained / "checkpoints" / "checkpoint-2"
    flags = _flags(image_folder, tmp_path / "o", "--max-steps", "3", "--report-to", "none", "--resume", str(ckpt))
    flags[flags.index("--proj-dim") + 1] = "8"
    assert run_main(flags) == 1
    assert "other model settings" in capsys.readouterr().err
    broken = tmp_path / "broken_ckpt"
    shutil.copytree(ckpt, broken)
    (broken / "COMPLETE").unlink()
    assert run_main(_flags(image_folder, tmp_path / "o2", "--max-steps", "3", "--report-to", "none",
                       "--resume", str(broken))) == 1
    assert "incomplete" in capsys.readouterr().err


def test_dataset_column_source(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict({"picture": [_pattern(i) for i in range(4)]}).cast_column("picture", datasets.Image())
    ds.save_to_disk(str(tmp_path / "ds"))
    out = tmp_path / "out"
    flags = ["--dataset", str(tmp_path / "ds"), "--column", "picture"] + _flags(Path("x"), out, "--max-steps", "1",
                                                                                   "--checkpoint-every", "0",
                                                                                   "--report-to", "none")[2:]
    assert run_main(flags) == 0
    assert (out / "model" / "model.safetensors").is_file()
    assert "picture" in (out / "model" / "README.md").read_text()


def test_non_finite_loss_stops_the_run_naming_step_and_term(image_folder, tmp_path, capsys, monkeypatch):
    import cut_hf.objectives.simclr as simclr_objective

    monkeypatch.setattr(simclr_objective, "nt_xent_loss_for_anchors", lambda *a, **k: a[0].sum() * float("nan"))
    assert run_main(_flags(image_folder, tmp_path / "o", "--max-steps", "2", "--report-to", "none",
                           "--checkpoint-every", "0")) == 1
    assert "step 1: loss nt_xent is nan" in capsys.readouterr().err
    assert run_main(_flags(image_folder, tmp_path / "o", "--mixed-precision", "fp16", "--report-to", "none")) == 1
    assert "fp16 needs a GPU" in capsys.readouterr().err


def test_data_errors_are_one_line(tmp_path, image_folder, capsys):
    assert run_main(_flags(tmp_path / "missing", tmp_path / "o", "--max-steps", "1", "--report-to", "none")) == 1
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert run_main(_flags(tmp_path / "empty", tmp_path / "o", "--max-steps", "1", "--report-to", "none")) == 1
    assert "holds no images" in capsys.readouterr().err
    few = _flags(image_folder, tmp_path / "o", "--max-steps", "1", "--report-to", "none")
    few[few.index("--batch-size") + 1] = "32"
    assert run_main(few) == 1
    assert "fewer than one batch" in capsys.readouterr().err
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "only.png").write_text("not an image")  # once a DataLoader worker's traceback
    assert run_main(_flags(tmp_path / "corrupt", tmp_path / "o2", "--max-steps", "1")) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "no readable image" in err and "only.png" in err
    assert not (tmp_path / "o2").exists()
    with pytest.raises(SystemExit):
        run_main(["--data", str(image_folder), "--dataset", "x"])
    assert "exactly one way" in capsys.readouterr().err


# ----------------------------------------------------------------------------- evaluation


def test_weighted_knn_is_a_weighted_vote():
    train = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 1, 0])
    query = torch.tensor([[1.0, 0.05]])
    # k 3: neighbours rows 0 (class 0, cos ~1), 1 and 2 (class 1): a plain vote says 1, exp(sim / 0.1) says 0.
    assert knn_predict(train, labels, query, 2, k=3, temperature=0.1).tolist() == [0]
    assert knn_predict(train, labels, query, 2, k=3, temperature=100.0).tolist() == [1]
    assert knn_predict(train, labels, query, 2, k=200).tolist() == [0]  # k capped at the training set


def _random_labelled(dest: Path) -> Path:
    """48 random pictures (16 x 16) in 3 classes drawn at random: 10 train and 6 test images per class."""
    rng = np.random.default_rng(5)
    for split, n in (("train", 10), ("test", 6)):
        for name in ("a", "b", "c"):
            (dest / split / name).mkdir(parents=True)
            for i in range(n):
                arr = rng.integers(0, 256, (1, 1, 3)) * rng.uniform(0.5, 1, (16, 16, 1))  # a tinted texture
                Image.fromarray(arr.astype(np.uint8)).save(dest / split / name / f"{i}.png")
    return dest


def _knn_top1_by_hand(model_dir: Path, labelled: Path) -> float:
    """Weighted kNN accuracy of the model's h on ``labelled``'s train/test folders, one vote at a time."""
    from cut_hf.evaluation.simclr import preprocess

    model = SimCLR.from_pretrained(model_dir).eval()

    def features(split: str) -> list[tuple[torch.Tensor, str]]:
        items = sorted((p, p.parent.name) for p in (labelled / split).glob("*/*.png"))
        with torch.no_grad():
            h = model.encode(torch.stack([preprocess(Image.open(p), 16) for p, _ in items]))
        return [(torch.nn.functional.normalize(v, dim=0), label) for v, (_, label) in zip(h, items)]

    train = features("train")
    correct = 0
    tests = features("test")
    for query, label in tests:
        votes: dict[str, float] = {}
        for key, key_label in train:
            votes[key_label] = votes.get(key_label, 0.0) + math.exp(float(query @ key) / 0.1)
        correct += max(votes, key=votes.get) == label
    return correct / len(tests)


def test_evaluation_command(trained, labelled_folder, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert evaluate_main(["--model", str(trained), "--data", str(labelled_folder), "--image-size", "16",
                          "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["num_train"] == 12 and result["num_test"] == 6 and result["num_classes"] == 2
    assert result["k"] == 12 and result["knn_temperature"] == 0.1 and result["backbone"] == "resnet18"
    assert result["knn_top1"] == result["linear_top1"] == 1.0  # red from blue: any encoder separates them
    # Accuracies on red/blue are saturated, so the kNN is checked on labels unrelated to colour, where
    # the answer depends on the trained features, the vote and its weights: against a vote written
    # out here (every training image, k 30 >= 30, votes exp(cos / 0.1) for its class).
    shuffled = _random_labelled(tmp_path / "random")
    assert evaluate_main(["--model", str(trained), "--data", str(shuffled), "--image-size", "16",
                          "--output", str(out)]) == 0
    by_hand = _knn_top1_by_hand(trained, shuffled)
    assert json.loads(out.read_text())["knn_top1"] == pytest.approx(by_hand, abs=1e-6)  # a float32 mean of 18
    assert "kNN top-1" in capsys.readouterr().out
    # A random encoder separates red from blue: the probes themselves work.
    assert evaluate_main(["--random-init", "--backbone", "resnet18", "--cifar-stem", "--data", str(labelled_folder),
                          "--image-size", "16", "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["random_init"] and result["knn_top1"] == 1.0 and result["linear_top1"] == 1.0


def test_evaluation_errors_are_one_line(tmp_path, labelled_folder, capsys):
    assert evaluate_main(["--model", str(tmp_path / "nope"), "--data", str(labelled_folder)]) == 1
    assert "does not exist" in capsys.readouterr().err
    one = tmp_path / "one" / "only"
    one.mkdir(parents=True)
    _pattern(0).save(one / "a.png")
    _pattern(1).save(one / "b.png")
    assert evaluate_main(["--random-init", "--data", str(tmp_path / "one"), "--output", str(tmp_path / "r.json")]) == 1
    assert "single class" in capsys.readouterr().err
    assert evaluate_main(["--random-init", "--data", str(tmp_path / "absent")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_labelled_folder_without_split_is_split_per_class(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(5):
            _pattern(i).save(tmp_path / name / f"{i}.png")
    train, test = load_labelled(tmp_path, test_fraction=0.2, seed=0)
    assert len(train.paths) == 8 and len(test.paths) == 2 and sorted(test.labels) == [0, 1]
    assert not set(train.paths) & set(test.paths)
