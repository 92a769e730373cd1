"""cut-hf evaluate and cut_hf.evaluation.metrics: FID / KID / paired metrics, checked against direct
computations, on tiny folders with a small feature extractor (the same code path as Inception)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from cut_hf import CUTGenerator
from cut_hf.cli.evaluate import main
from cut_hf.evaluation.translation import EvaluationError, evaluate_folders
from cut_hf.evaluation.metrics import MetricsUnavailable, TinyFeatureExtractor, fid_kid, inception_feature_extractor

SIZE = 32


def direct_fid(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance from means and covariances, as pytorch-fid: |mu1-mu2|^2 + Tr(S1 + S2 - 2 sqrt(S1 S2))."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def direct_kid(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3 over the full sets."""
    d = a.shape[1]
    k = lambda x, y: (x @ y.T / d + 1) ** 3  # noqa: E731
    kaa, kbb, kab = k(a, a), k(b, b), k(a, b)
    m, n = len(a), len(b)
    return float((kaa.sum() - np.trace(kaa)) / (m * (m - 1)) + (kbb.sum() - np.trace(kbb)) / (n * (n - 1))
                 - 2 * kab.mean())


def write_images(folder: Path, n: int, seed: int, shape=(40, 48)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        # smooth random blobs: closer to photos than white noise, and different per seed
        low = rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)
        img = Image.fromarray(low).resize(shape[::-1], Image.Resampling.BICUBIC)
        path = folder / f"{i:03d}.png"
        img.save(path)
        paths.append(path)
    return paths


@pytest.fixture
def data(tmp_path) -> tuple[Path, Path]:
    a, b = tmp_path / "testA", tmp_path / "testB"
    write_images(a, 6, seed=1)
    write_images(b, 7, seed=2)
    (a / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")  # reported and skipped, not fatal
    return a, b


@pytest.fixture
def generator() -> CUTGenerator:
    torch.manual_seed(0)
    g = CUTGenerator(ngf=4, n_blocks=2)
    with torch.no_grad():  # the paper's init (gain 0.02) gives near-constant outputs; we want content
        for p in g.parameters():
            p.mul_(25.0)
    return g


class CountingExtractor(TinyFeatureExtractor):
    """The tiny extractor, counting the images it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        assert images.dtype == torch.uint8 and images.shape[1] == 3  # the Inception contract
        self.seen += len(images)
        return super().forward(images)


def features_of_files(extractor, paths, size=None) -> np.ndarray:
    """Independent feature pass over image files (read back from disk)."""
    out = []
    for p in paths:
        im = Image.open(p).convert("RGB")
        if size:
            im = im.resize((size, size), Image.Resampling.BICUBIC)
        t = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)[None]
        with torch.no_grad():
            out.append(extractor(t).double().numpy())
    return np.concatenate(out)


# ---------------------------------------------------------------------------------------------
# metrics.fid_kid against direct computations
# ---------------------------------------------------------------------------------------------

def test_fid_and_kid_match_direct_computation():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(60, 8))
    b = rng.normal(loc=0.3, scale=1.2, size=(50, 8)) @ rng.normal(size=(8, 8)) * 0.5
    got = fid_kid(torch.from_numpy(a), torch.from_numpy(b), kid_subsets=1, kid_subset_size=1000)
    assert got["fid"] == pytest.approx(direct_fid(a, b), rel=1e-6)
    # one subset of the whole (smaller) set: for the equal-size case the value is permutation-free
    got_eq = fid_kid(torch.from_numpy(a[:50]), torch.from_numpy(b), kid_subsets=1)
    assert got_eq["kid_subset_size"] == 50
    assert got_eq["kid_mean"] == pytest.approx(direct_kid(a[:50], b), rel=1e-6)


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_shift():
    rng = np.random.default_rng(1)
    a = torch.from_numpy(rng.normal(size=(80, 6)))
    same = fid_kid(a, a.clone(), kid_subsets=5)
    assert abs(same["fid"]) < 1e-6
    b = torch.from_numpy(rng.normal(size=(80, 6)))  # another sample of the same distribution
    near = fid_kid(a, b, kid_subsets=20)
    far = fid_kid(a, b + 1.0, kid_subsets=20)
    farther = fid_kid(a, b + 2.0, kid_subsets=20)
    assert near["fid"] < far["fid"] < farther["fid"]
    assert abs(near["kid_mean"]) < far["kid_mean"] / 10 and far["kid_mean"] < farther["kid_mean"]
    # the mean shift dominates: FID ~ |shift|^2 * d = 6 for a shift of 1 in every coordinate
    assert far["fid"] == pytest.approx(direct_fid(a.numpy(), b.numpy() + 1.0), rel=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        fid_kid(a[:1], b)


# ---------------------------------------------------------------------------------------------
# evaluate_folders: the whole path, checked from the files it wrote
# ---------------------------------------------------------------------------------------------

def test_evaluate_folders_matches_fid_computed_from_saved_outputs(tmp_path, data, generator):
    a, b = data
    extractor = TinyFeatureExtractor(dim=4)  # fewer features than images: full-rank covariances
    generator.train()
    result = evaluate_folders(generator, a, b, extractor, output_dir=tmp_path / "out", size=SIZE, batch_size=4,
                              kid_subsets=1)
    assert generator.training  # the caller's mode is restored (training calls this mid-run)

    saved = sorted((tmp_path / "out").glob("*.png"))
    assert [p.stem for p in saved] == [f"{i:03d}" for i in range(6)]
    assert all(Image.open(p).size == (SIZE, SIZE) for p in saved)  # the paper's square test size
    assert result["num_translated"] == 6 and result["num_reference"] == 7
    assert [Path(s["file"]).name for s in result["skipped"]] == ["broken.jpg"]
    assert result["feature_dim"] == extractor.num_features and result["size"] == SIZE

    fake = features_of_files(extractor, saved)  # lossless PNGs: the very pixels that were measured
    real = features_of_files(extractor, sorted(b.glob("*.png")), size=SIZE)
    assert result["fid"] == pytest.approx(direct_fid(real, fake), rel=1e-5)
    assert json.loads(json.dumps(result)) == result  # JSON-ready


def test_cache_keeps_reference_features_between_calls(data, generator):
    a, b = data
    extractor = CountingExtractor()
    cache: dict = {}
    first = evaluate_folders(generator, a, b, extractor, size=SIZE, cache=cache, kid_subsets=2)
    assert extractor.seen == 6 + 7
    second = evaluate_folders(generator, a, b, extractor, size=SIZE, cache=cache, kid_subsets=2)
    assert extractor.seen == 6 + 7 + 6  # only the translations are measured again
    assert second["fid"] == pytest.approx(first["fid"], rel=1e-9)


def test_native_size_keeps_input_sizes(tmp_path, data, generator):
    a, b = data
    evaluate_folders(generator, a, b, TinyFeatureExtractor(), output_dir=tmp_path / "out", size=0, kid_subsets=1)
    assert {Image.open(p).size for p in (tmp_path / "out").glob("*.png")} == {(48, 40)}


def test_paired_metrics_match_direct_psnr(tmp_path, data, generator, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # no cached AlexNet: LPIPS is skipped
    a, _ = data
    evaluate_folders(generator, a, data[1], TinyFeatureExtractor(), output_dir=tmp_path / "plain", size=SIZE,
                     kid_subsets=1)
    # Ground truth = the translation plus known noise, for all but one input (left unmatched).
    gt = tmp_path / "gt"
    gt.mkdir()
    rng = np.random.default_rng(3)
    expected_psnr = []
    for p in sorted((tmp_path / "plain").glob("*.png"))[:5]:
        x = np.asarray(Image.open(p).convert("RGB")).astype(np.int16)
        y = np.clip(x + rng.integers(-12, 13, x.shape), 0, 255).astype(np.uint8)
        Image.fromarray(y).save(gt / p.name)
        mse = ((x / 255.0 - y / 255.0) ** 2).mean()
        expected_psnr.append(10 * np.log10(1.0 / mse))
    result = evaluate_folders(generator, a, gt, TinyFeatureExtractor(), size=SIZE, paired=True, kid_subsets=1)
    paired = result["paired"]
    assert paired["pairs"] == 5 and paired["unmatched"] == ["005.png"]
    assert paired["psnr"] == pytest.approx(float(np.mean(expected_psnr)), rel=1e-6)
    assert 0.5 < paired["ssim"] < 1.0  # noisy but similar
    assert paired["lpips"] is None and "LPIPS skipped" in paired["lpips_note"]

    with pytest.raises(EvaluationError, match="no file name"):
        evaluate_folders(generator, a, _renamed(gt, tmp_path / "other"), TinyFeatureExtractor(), size=SIZE,
                         paired=True)


def _renamed(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for p in src.iterdir():
        shutil.copy(p, dst / f"x_{p.name}")
    return dst


# ---------------------------------------------------------------------------------------------
# The CLI and its errors
# ---------------------------------------------------------------------------------------------

def test_cli_writes_json_and_images(tmp_path, data, generator, capsys):
    a, b = data
    generator.save_pretrained(tmp_path / "model")
    rc = main(["--model", str(tmp_path / "model"), "--input", str(a), "--reference", str(b),
               "--output", str(tmp_path / "out"), "--size", str(SIZE), "--feature-extractor", "tiny",
               "--kid-subsets", "3"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    printed = json.loads(captured.out)
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert printed == written
    assert written["num_translated"] == 6 and np.isfinite(written["fid"]) and written["fid"] > 0
    assert written["command"].startswith("cut-hf evaluate --model")
    assert "FID" in captured.err.strip().splitlines()[-1]
    assert len(list((tmp_path / "out").glob("*.png"))) == 6


def test_cli_accepts_an_official_pth_checkpoint(tmp_path, data, generator, capsys):
    a, b = data
    torch.save({f"module.{k}": v for k, v in generator.state_dict().items()}, tmp_path / "latest_net_G.pth")
    rc = main(["--model", str(tmp_path / "latest_net_G.pth"), "--input", str(a), "--reference", str(b),
               "--size", str(SIZE), "--feature-extractor", "tiny", "--kid-subsets", "1",
               "--json", str(tmp_path / "m.json")])
    assert rc == 0, capsys.readouterr().err
    direct = evaluate_folders(generator, a, b, TinyFeatureExtractor(), size=SIZE, kid_subsets=1)
    assert json.loads((tmp_path / "m.json").read_text())["fid"] == pytest.approx(direct["fid"], rel=1e-6)


def one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_cli_errors_are_one_line(tmp_path, data, generator, capsys, monkeypatch):
    a, b = data
    generator.save_pretrained(tmp_path / "model")
    tiny = ["--feature-extractor", "tiny"]
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (["--model", str(tmp_path / "model"), "--input", str(tmp_path / "nope"), "--reference", str(b), *tiny],
         "does not exist"),
        (["--model", str(tmp_path / "model"), "--input", str(a), "--reference", str(empty), *tiny], "holds no images"),
        (["--model", str(tmp_path / "missing_model"), "--input", str(a), "--reference", str(b), *tiny],
         "does not exist"),
    ]
    # Offline, no cached Inception, no --inception-weights: say how to get them (before any translation).
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cases.append((["--model", str(tmp_path / "model"), "--input", str(a), "--reference", str(b)],
                  "--inception-weights"))
    cases.append((["--model", str(tmp_path / "model"), "--input", str(a), "--reference", str(b),
                   "--inception-weights", str(tmp_path / "nothing.pth")], "not found"))
    for args, expected in cases:
        assert main(args) == 1
        line = one_line(capsys.readouterr().err)
        assert expected in line, line
    assert "weights-inception-2015-12-05-6726825d.pth" in inception_message(tmp_path)


def inception_message(tmp_path) -> str:
    with pytest.raises(MetricsUnavailable) as err:
        inception_feature_extractor()
    return str(err.value)


def test_inception_weights_file_is_checked_before_use(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, bad)
    with pytest.raises(MetricsUnavailable, match="does not hold the FID Inception-v3 weights"):
        inception_feature_extractor(bad)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pth"
    torch.save({"x": Exploit()}, evil)
    with pytest.raises(MetricsUnavailable, match="not a plain Inception state dict"):
        inception_feature_extractor(evil)
    assert not marker.exists()  # torch-fidelity's own torch.load(weights_only=False) never saw it


def test_inception_path_runs_end_to_end_with_a_local_weights_file(tmp_path, data, generator, monkeypatch):
    """The default (Inception) path, offline, with --inception-weights: random weights stand in for the
    real file (same names and shapes), so everything but the numbers is exercised."""
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    with monkeypatch.context() as m:  # build the torch-fidelity network without its download
        m.setattr(fe, "load_state_dict_from_url", lambda *a, **k: {})
        m.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None)
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    weights = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    torch.save({k: v.half() for k, v in net.state_dict().items()}, weights)  # half: a smaller file to write
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    a, b = data
    for p in list(a.glob("00[2-5].png")) + list(b.glob("00[2-6].png")):
        p.unlink()  # 2 + 2 images: Inception at 299 px is the slow part
    generator.save_pretrained(tmp_path / "model")
    rc = main(["--model", str(tmp_path / "model"), "--input", str(a), "--reference", str(b), "--size", str(SIZE),
               "--inception-weights", str(weights), "--kid-subsets", "1", "--json", str(tmp_path / "m.json")])
    assert rc == 0
    result = json.loads((tmp_path / "m.json").read_text())
    assert result["feature_dim"] == 2048 and result["feature_extractor"].startswith("inception-v3-compat")
    assert np.isfinite(result["fid"]) and result["num_translated"] == 2


@pytest.mark.parametrize("module, args", [
    ("evaluate", ["--model", "nope/", "--input", "nope", "--reference", "nope", "--feature-extractor", "tiny"]),
    ("evaluate-simclr", ["--data", "nope", "--random-init"]),
])
def test_cut_hf_commands_run_the_command_lines(tmp_path, module, args):
    """``python -m cut_hf <command>`` reaches the mains in cut_hf/cli/ (as a user types it)."""
    import os
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "cut_hf", module, *args], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert one_line(proc.stderr).startswith("error: ") and "nope" in proc.stderr
