"""Hub round trip of the three CUT models, model cards, and clear errors when loading fails."""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard

from cut_hf import (
    CUTGenerator,
    ModelLoadError,
    PatchDiscriminator,
    PatchSampler,
    SimCLR,
    StyleGAN2Discriminator,
    StyleGAN2Generator,
    load_generator,
)
from cut_hf.hub.mixin import CUT_TAGS, check_local_model_dir

G_CFG = dict(ngf=4, n_blocks=2, antialias_up=False, nce_layers=[0, 4, 8])  # not the defaults
D_CFG = dict(ndf=4, n_layers=2, input_nc=1, antialias=False)
S_CFG = dict(in_channels=[3, 8, 16], num_patches=12, nc=8)


def init_args(cls) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters) - {"self"}


@pytest.fixture
def saved_generator(tmp_path) -> tuple[CUTGenerator, Path]:
    g = CUTGenerator(**G_CFG).eval()
    g.save_pretrained(tmp_path / "g")
    return g, tmp_path / "g"


# --- round trip -------------------------------------------------------------------------------
def test_generator_round_trip_is_identical(saved_generator, images):
    g, path = saved_generator
    loaded = CUTGenerator.from_pretrained(path, strict=True)
    assert not loaded.training and loaded.nce_layers == (0, 4, 8)
    with torch.no_grad():
        assert torch.equal(loaded(images), g(images))
        assert all(torch.equal(a, b) for a, b in zip(loaded.encode(images), g.encode(images), strict=True))
    for k, v in g.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_residual_generator_round_trip_and_identity_at_zero(tmp_path, images):
    g = CUTGenerator(ngf=4, n_blocks=1, residual=True).eval()
    g.save_pretrained(tmp_path / "r")
    assert json.loads((tmp_path / "r" / "config.json").read_text())["residual"] is True
    loaded = CUTGenerator.from_pretrained(tmp_path / "r", strict=True)
    assert loaded.residual
    with torch.no_grad():
        assert torch.equal(loaded(images), g(images))
        out, _ = g.forward_with_features(images)
        assert torch.equal(out, g(images))
        assert torch.equal(g.encode(images, [len(g.model) - 1])[0], out)  # the last layer is the residual output
        last = g.model[-2]  # the last conv: with zero weights the generator is the identity (up to the clamp)
        last.weight.zero_(), last.bias.zero_()
        x = images.clamp(-0.999, 0.999)
        torch.testing.assert_close(g(images), x, atol=1e-6, rtol=0)
        assert not torch.equal(CUTGenerator(ngf=4, n_blocks=1).eval()(images), images)
    with pytest.raises(ValueError, match="input_nc == output_nc"):
        CUTGenerator(input_nc=1, output_nc=3, residual=True)


def test_discriminator_and_sampler_round_trip_are_identical(tmp_path):
    d = PatchDiscriminator(**D_CFG).eval()
    d.save_pretrained(tmp_path / "d")
    d2 = PatchDiscriminator.from_pretrained(tmp_path / "d", strict=True)
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(d2(x), d(x))

    s = PatchSampler(**S_CFG)
    s.save_pretrained(tmp_path / "s")
    s2 = PatchSampler.from_pretrained(tmp_path / "s", strict=True)
    feats = [torch.randn(2, c, 8, 8) for c in S_CFG["in_channels"]]
    out, ids = s(feats)
    out2, ids2 = s2(feats, patch_ids=ids)
    assert s2.num_patches == 12 and all(torch.equal(a, b) for a, b in zip(out, out2, strict=True))


@pytest.mark.parametrize("cls, cfg", [(CUTGenerator, G_CFG), (PatchDiscriminator, D_CFG), (PatchSampler, S_CFG)])
def test_config_json_holds_every_init_argument(tmp_path, cls, cfg):
    cls(**cfg).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert set(config) == init_args(cls)
    for key, value in cfg.items():
        assert config[key] == value, key
    assert json.loads(json.dumps(config)) == config  # plain JSON values only


# --- model cards ------------------------------------------------------------------------------
@pytest.mark.parametrize("cls, cfg", [(CUTGenerator, G_CFG), (PatchDiscriminator, D_CFG), (PatchSampler, S_CFG)])
def test_model_card_has_metadata_and_no_placeholders(tmp_path, cls, cfg):
    cls(**cfg).save_pretrained(tmp_path)
    text = (tmp_path / "README.md").read_text()
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.library_name == "cut-hf"
    assert set(CUT_TAGS) <= set(card.data.tags)
    assert {"image-to-image", "cut", "unpaired-image-translation", "contrastive-learning"} <= set(card.data.tags)
    assert card.data.pipeline_tag == "image-to-image"
    assert card.data.license == "mit"
    for placeholder in ("[More Information Needed]", "{{", "}}", "{%", "%}"):
        assert placeholder not in text, placeholder
    assert "arxiv.org/abs/2007.15651" in text


def test_model_card_renders_training_details_and_metrics(tmp_path):
    g = CUTGenerator(ngf=4, n_blocks=1)
    g.save_pretrained(tmp_path, model_card_kwargs=dict(
        model_name="horse2zebra CUT", repo_id="someone/horse2zebra-cut", domain_a="horses", domain_b="zebras",
        training={"mode": "cut", "steps": 1234, "image size": 256},
        metrics={"FID": 45.5, "KID": 0.0123}))
    text = (tmp_path / "README.md").read_text()
    assert "# horse2zebra CUT" in text and "from **horses** to **zebras**" in text
    assert "| steps | 1234 |" in text and "| mode | cut |" in text
    assert "| FID | 45.5 |" in text and "| KID | 0.0123 |" in text
    assert 'CUTGenerator.from_pretrained("someone/horse2zebra-cut")' in text
    assert ModelCard.load(tmp_path / "README.md").data.library_name == "cut-hf"


def test_an_existing_card_is_kept(saved_generator):
    g, path = saved_generator
    (path / "README.md").write_text("---\nlicense: mit\n---\n# my own card\n")
    g.save_pretrained(path)
    assert "# my own card" in (path / "README.md").read_text()


# --- load_generator ---------------------------------------------------------------------------
def test_load_generator_reads_a_folder_and_a_training_output_folder(saved_generator, tmp_path, images):
    g, path = saved_generator
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copytree(path, run / "generator")
    with torch.no_grad():
        expected = g(images)
        for source in (path, str(path), run):
            loaded = load_generator(source)
            assert isinstance(loaded, CUTGenerator) and not loaded.training
            assert torch.equal(loaded(images), expected)
    assert load_generator(path, nce_layers=[0, 4]).nce_layers == (0, 4)  # config overrides
    with pytest.raises(TypeError, match="no_such_arg"):
        load_generator(path, no_such_arg=1)


def one_line_error(fn, *args, **kwargs) -> str:
    with pytest.raises(ModelLoadError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and len(message) < 400, message
    return message


def test_missing_and_incomplete_folders_give_one_line_errors(saved_generator, tmp_path):
    _, path = saved_generator
    assert "does not exist" in one_line_error(load_generator, tmp_path / "nope")
    assert "does not exist" in one_line_error(CUTGenerator.from_pretrained, str(tmp_path / "nope"))
    (path / "model.safetensors").unlink()
    assert "missing model.safetensors" in one_line_error(load_generator, path)
    # The stock mixin would build a default model here and load nothing: ours refuses.
    assert "missing model.safetensors" in one_line_error(CUTGenerator.from_pretrained, path)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "missing config.json, model.safetensors" in one_line_error(load_generator, empty)
    (tmp_path / "file.txt").write_text("x")
    assert "is a file" in one_line_error(load_generator, tmp_path / "file.txt")


def test_truncated_foreign_and_broken_files_give_one_line_errors(saved_generator, tmp_path):
    _, path = saved_generator
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    assert "truncated or not safetensors" in one_line_error(load_generator, path)
    weights.write_bytes(data)

    (path / "config.json").write_text("{not json")
    assert "config.json" in one_line_error(load_generator, path)
    (path / "config.json").write_text(json.dumps({**G_CFG, "norm": "group"}))
    assert "does not describe a CUTGenerator" in one_line_error(load_generator, path)

    d = tmp_path / "d"
    PatchDiscriminator(ndf=4).save_pretrained(d)
    message = one_line_error(load_generator, d)  # a discriminator folder is not a generator
    assert "does not hold CUTGenerator weights" in message and "missing" in message and "unexpected" in message
    (path / "config.json").write_text(json.dumps({**G_CFG, "ngf": 8}))  # weights of another size
    assert "of another shape" in one_line_error(load_generator, path)


def test_offline_uncached_hub_id_gives_a_clear_error(hub_offline, tmp_path):
    message = one_line_error(load_generator, "someone/not-cached-cut", cache_dir=tmp_path)
    assert "HF_HUB_OFFLINE=1" in message and "someone/not-cached-cut" in message
    assert "not a valid Hugging Face Hub id" in one_line_error(load_generator, "bad id!", cache_dir=tmp_path)


def fake_hub_cache(cache: Path, repo_id: str, folder: Path, subfolder: str = "") -> None:
    """Lay ``folder`` out as huggingface_hub's cache holds a downloaded snapshot of ``repo_id``."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(folder, repo / "snapshots" / commit / subfolder)


@pytest.mark.parametrize("subfolder", ["", "generator"])
def test_offline_cached_hub_id_loads(hub_offline, saved_generator, tmp_path, images, subfolder):
    g, path = saved_generator
    fake_hub_cache(tmp_path / "cache", "someone/tiny-cut", path, subfolder)
    loaded = load_generator("someone/tiny-cut", cache_dir=tmp_path / "cache")
    with torch.no_grad():
        assert torch.equal(loaded(images), g(images))
    if not subfolder:  # the plain mixin API reads the same cache
        again = CUTGenerator.from_pretrained("someone/tiny-cut", cache_dir=tmp_path / "cache")
        assert torch.equal(again(images), loaded(images))


def test_check_local_model_dir_tells_paths_from_hub_ids(saved_generator, tmp_path):
    _, path = saved_generator
    assert check_local_model_dir(path) == path
    assert check_local_model_dir("user/name") is None  # looks like a Hub id
    for local_looking in ("./nope", "/no/such/dir", "a/b/c"):
        with pytest.raises(ModelLoadError, match="does not exist"):
            check_local_model_dir(local_looking)


def hub_error(cls, message="boom"):
    """An instance of a huggingface_hub HTTP error without a real HTTP response behind it."""
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    return err


@pytest.mark.parametrize("error, expected", [
    ("RepositoryNotFoundError", "no Hub repository 'someone/tiny-cut' exists"),
    ("GatedRepoError", "gated"),
    ("RevisionNotFoundError", "no such revision"),
    ("RemoteEntryNotFoundError", "holds no cut-hf model"),
    ("LocalEntryNotFoundError", "could not be reached"),  # online mode, but no network
])
def test_hub_errors_become_one_line_messages(monkeypatch, tmp_path, error, expected):
    import huggingface_hub
    from huggingface_hub import constants, errors

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    cls = getattr(errors, error)

    def fake_download(*args, **kwargs):  # what the Hub client raises for that failure
        raise hub_error(cls) if error != "LocalEntryNotFoundError" else cls("no connection")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", fake_download)  # the first contact
    assert expected in one_line_error(load_generator, "someone/tiny-cut", cache_dir=tmp_path)


# --- every class, every failure: one line, and still the Hub's error type (issue 14) ----------
def simclr_tiny():
    from cut_hf import SimCLR

    return SimCLR(backbone="resnet18", proj_dim=8, cifar_stem=True)


ALL_CLASSES = ["CUTGenerator", "PatchDiscriminator", "PatchSampler", "SimCLR"]


@pytest.mark.parametrize("name", ALL_CLASSES)
def test_offline_uncached_id_is_one_line_for_every_class(hub_offline, tmp_path, name):
    from huggingface_hub.errors import LocalEntryNotFoundError

    import cut_hf

    cls = getattr(cut_hf, name)
    message = one_line_error(cls.from_pretrained, "someone/not-cached", cache_dir=tmp_path)
    assert "HF_HUB_OFFLINE=1" in message
    with pytest.raises(LocalEntryNotFoundError):  # code written against huggingface_hub still catches it
        cls.from_pretrained("someone/not-cached", cache_dir=tmp_path)
    assert "does not exist" in one_line_error(cls.from_pretrained, tmp_path / "nope")


def test_simclr_loads_strictly(tmp_path):
    from cut_hf import SimCLR

    model = simclr_tiny()
    model.save_pretrained(tmp_path / "m")
    loaded = SimCLR.from_pretrained(tmp_path / "m")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x)[1], model.eval()(x)[1])
    (tmp_path / "m" / "config.json").write_text(json.dumps({"backbone": "resnet18", "proj_dim": 4, "cifar_stem": True}))
    assert "of another shape" in one_line_error(SimCLR.from_pretrained, tmp_path / "m")


def test_hub_flavoured_error_keeps_the_hub_attributes_and_pickles():
    import pickle

    from huggingface_hub.errors import RepositoryNotFoundError

    from cut_hf.errors import hub_load_error

    cause = hub_error(RepositoryNotFoundError, "404 long\nmessage")
    cause.repo_id = "someone/x"
    err = hub_load_error("no Hub repository 'someone/x' exists", cause)
    assert isinstance(err, ModelLoadError) and isinstance(err, RepositoryNotFoundError)
    assert str(err) == "no Hub repository 'someone/x' exists" and err.repo_id == "someone/x"
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is ModelLoadError and str(again) == str(err)


# --- a Hub that cannot be reached: bounded time, one line ---------------------------------------
UNREACHABLE_SCRIPT = r"""
import json, sys, time
from cut_hf import CUTGenerator, ModelLoadError
from huggingface_hub.errors import LocalEntryNotFoundError
t0 = time.perf_counter()
try:
    CUTGenerator.from_pretrained("someone/cut-model", cache_dir=sys.argv[1])
    result = {"error": None}
except ModelLoadError as err:
    result = {"error": str(err), "hub_type": isinstance(err, LocalEntryNotFoundError)}
result["seconds"] = time.perf_counter() - t0
if sys.argv[2:]:  # a cached copy is used when the Hub cannot be reached
    result["cached_loads"] = CUTGenerator.from_pretrained(sys.argv[2], cache_dir=sys.argv[1]).ngf == 4
print(json.dumps(result))
"""


@pytest.mark.parametrize("server", ["silent", "refusing"])
def test_unreachable_hub_fails_fast_with_one_line(saved_generator, tmp_path, server):
    import os
    import socket
    import subprocess
    import sys
    import threading
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    held = []
    if server == "silent":  # accepts every connection and never answers
        listener.listen(32)
        threading.Thread(target=lambda: [held.append(listener.accept()) for _ in range(32)], daemon=True).start()
    else:
        listener.close()  # nothing listens: connections are refused
    cached = ["someone/tiny-cut"] if server == "refusing" else []  # (the silent one would wait out a time-out)
    if cached:
        fake_hub_cache(tmp_path / "cache", cached[0], saved_generator[1])
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HUB_OFFLINE": "0",
           "HF_HUB_DISABLE_TELEMETRY": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", UNREACHABLE_SCRIPT, str(tmp_path / "cache"), *cached], env=env,
                          capture_output=True, text=True, timeout=120)
    wall = time.perf_counter() - t0
    listener.close()
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["error"] and "\n" not in result["error"] and "could not be reached" in result["error"]
    assert result["hub_type"], "not an instance of LocalEntryNotFoundError"
    assert result["seconds"] < 20, result
    assert result.get("cached_loads", bool(not cached))
    assert wall < 60


# --- a train.py output folder given to from_pretrained (issue 14) ------------------------------
def test_from_pretrained_reads_a_training_output_folder(saved_generator, tmp_path, images):
    g, path = saved_generator
    run = tmp_path / "run"
    shutil.copytree(path, run / "generator")
    s = PatchSampler(**S_CFG)
    s.save_pretrained(run / "sampler")
    with torch.no_grad():
        assert torch.equal(CUTGenerator.from_pretrained(run)(images), g(images))
    sampler = PatchSampler.from_pretrained(run)
    assert all(torch.equal(a, b) for a, b in zip(sampler.state_dict().values(), s.state_dict().values(), strict=True))
    # no discriminator/ there: the message names where the models are
    message = one_line_error(PatchDiscriminator.from_pretrained, run)
    assert "generator/" in message and "sampler/" in message and str(run / "generator") in message


# --- model cards: docs, datasets, examples, and links only to what exists (issue 14) -----------
KNOWN_URLS = {"https://arxiv.org/abs/2007.15651", "https://github.com/taesungp/contrastive-unpaired-translation",
              "https://arxiv.org/abs/2002.05709", "https://github.com/google-research/simclr",
              "https://huggingface.co/docs/huggingface_hub/package_reference/mixins"}


@pytest.mark.parametrize("name", ALL_CLASSES)
def test_cards_link_the_paper_its_code_and_the_docs_only(tmp_path, name):
    import re

    import cut_hf

    cls = getattr(cut_hf, name)
    model = simclr_tiny() if name == "SimCLR" else cls(**{"CUTGenerator": G_CFG, "PatchDiscriminator": D_CFG,
                                                           "PatchSampler": S_CFG}[name])
    model.save_pretrained(tmp_path)
    text = (tmp_path / "README.md").read_text()
    urls = set(re.findall(r"https?://[^\s)\"'>]+", text))
    assert urls and urls <= KNOWN_URLS, urls - KNOWN_URLS
    assert "huggingface.co/docs/huggingface_hub/package_reference/mixins" in text  # docs_url
    assert "cut-hf/cut-hf" not in text


def test_card_records_hub_datasets_and_example_images(tmp_path):
    g = CUTGenerator(**G_CFG)
    examples = [{"input": "examples/horse.png", "output": "examples/horse_zebra.png", "title": "horse"},
                {"input": "examples/field.png"}]
    g.save_pretrained(tmp_path / "a", model_card_kwargs=dict(datasets="someone/horse2zebra", examples=examples))
    card = ModelCard.load(tmp_path / "a" / "README.md")
    assert card.data.datasets == ["someone/horse2zebra"]
    assert card.data.widget == [
        {"src": "examples/horse.png", "example_title": "horse", "output": {"url": "examples/horse_zebra.png"}},
        {"src": "examples/field.png", "example_title": "field"}]
    assert "## Examples" in card.text and "![horse, translated](examples/horse_zebra.png)" in card.text
    g.save_pretrained(tmp_path / "b")  # neither given: no such metadata, no empty section
    plain = ModelCard.load(tmp_path / "b" / "README.md")
    assert plain.data.datasets is None and getattr(plain.data, "widget", None) is None
    assert "## Examples" not in plain.text


def test_busy_hub_falls_back_to_the_cache_at_once(monkeypatch, saved_generator, tmp_path, images):
    import types

    import huggingface_hub
    from huggingface_hub import constants, errors

    g, path = saved_generator
    fake_hub_cache(tmp_path / "cache", "someone/tiny-cut", path)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    calls = []

    def busy(*args, **kwargs):  # a 503 answer: no retry of ours, the cached copy instead
        calls.append(kwargs.get("timeout"))
        err = hub_error(errors.HfHubHTTPError, "503 Service Unavailable")
        err.response = types.SimpleNamespace(status_code=503)
        raise err

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", busy)
    loaded = CUTGenerator.from_pretrained("someone/tiny-cut", cache_dir=tmp_path / "cache", timeout=2)
    with torch.no_grad():
        assert torch.equal(loaded(images), g(images))
    assert calls == [2.0, 2.0]  # one short request per file


def _tiny_models() -> dict[type, object]:
    torch.manual_seed(0)
    return {CUTGenerator: CUTGenerator(**G_CFG), PatchSampler: PatchSampler(**S_CFG),
            PatchDiscriminator: PatchDiscriminator(**D_CFG),
            StyleGAN2Generator: StyleGAN2Generator(ngf=4, crop_size=32),
            StyleGAN2Discriminator: StyleGAN2Discriminator(ndf=4, crop_size=32),
            SimCLR: SimCLR(backbone="resnet18", proj_dim=8, cifar_stem=True)}


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


@pytest.mark.parametrize("cls", [PatchSampler, PatchDiscriminator, StyleGAN2Discriminator, SimCLR, CUTGenerator,
                                 StyleGAN2Generator])
def test_every_model_class_loads_a_shipped_and_a_train_output_folder_alike(cls, tmp_path):
    """A train.py output folder (no model at the root) and a shipped or converted folder (the
    generator at the root, the other models in their subfolders) load without subfolder=; once
    PatchSampler.from_pretrained("models/mini-horse2zebra") asked for subfolder='sampler'."""
    models = _tiny_models()
    model, sub = models[cls], cls.output_subfolder
    generator = models[StyleGAN2Generator if cls is StyleGAN2Discriminator else CUTGenerator]
    model.save_pretrained(tmp_path / "run" / sub)  # train.py's layout
    generator.save_pretrained(tmp_path / "shipped")  # the generator at the root ...
    if model is not generator:
        model.save_pretrained(tmp_path / "shipped" / sub)  # ... this model beside it
    for folder in ("run", "shipped"):
        assert _same_weights(cls.from_pretrained(tmp_path / folder), model), folder
    # Asked for explicitly, a subfolder is the only place looked at; a root of another class with no
    # such subfolder is still one line about the root.
    assert _same_weights(cls.from_pretrained(tmp_path / "shipped", subfolder=sub if model is not generator else None),
                         model)
    if model is not generator:
        shutil.rmtree(tmp_path / "shipped" / sub)
        message = one_line_error(cls.from_pretrained, tmp_path / "shipped")
        assert f"does not hold {cls.__name__} weights" in message or f"does not describe a {cls.__name__}" in message


def test_the_shipped_folder_gives_its_sampler_as_the_app_does() -> None:
    root = Path(__file__).resolve().parents[2] / "models" / "mini-horse2zebra"
    assert _same_weights(PatchSampler.from_pretrained(root), PatchSampler.from_pretrained(root / "sampler"))
