"""Bring official CUT / FastCUT / SinCUT checkpoints (``latest_net_G.pth``, ``_D``, ``_F``) to the Hub format.

``cut-hf convert --checkpoint latest_net_G.pth --output DIR [--netD latest_net_D.pth]
[--netF latest_net_F.pth] [--name horse2zebra --mode cut|fastcut|sincut] [--push-to-hub ID]``
(the command line is :mod:`cut_hf.cli.convert`). Reading and recognising the checkpoints is
:mod:`cut_hf.official.checkpoints`; this module writes the folders, their cards, and pushes them.

Output layout (every folder is a normal ``from_pretrained`` folder with its own model card)::

    DIR/                 CUTGenerator       (config.json, model.safetensors, README.md)
    DIR/discriminator/   PatchDiscriminator (with --netD)
    DIR/sampler/         PatchSampler       (with --netF)
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi

from cut_hf import __version__
from cut_hf.hub.mixin import CODE_URL as OFFICIAL_REPO_URL
from cut_hf.hub.mixin import PAPER_URL
from cut_hf.models import CUTGenerator, PatchSampler, nce_channels
from cut_hf.official.checkpoints import MODES, ConversionError, OfficialModel, load_official

OFFICIAL_PRETRAINED_URL = "http://efrosgans.eecs.berkeley.edu/CUT/pretrained_models.tar"
# FID on the test split as reported in the paper (pytorch-fid on 256x256 outputs).
PAPER_FID = {("horse2zebra", "cut"): 45.5, ("horse2zebra", "fastcut"): 73.4}
# (slot, subfolder of the output, card title): --checkpoint, --netD, --netF
SLOTS = (("generator", "", "generator"), ("discriminator", "discriminator", "discriminator"),
         ("sampler", "sampler", "patch sampler"))

# The official repository's LICENSE: its own code (and so the weights it publishes) is BSD 2-clause.
OFFICIAL_LICENSE = "bsd-2-clause"
OFFICIAL_COPYRIGHT = "Copyright (c) 2020, Taesung Park and Jun-Yan Zhu"
OFFICIAL_LICENSE_URL = f"{OFFICIAL_REPO_URL}/blob/master/LICENSE"
# SinCUT's StyleGAN2 networks (models/stylegan_networks.py) come from rosinality's stylegan2-pytorch
# (MIT), and the official LICENSE lists, for StyleGAN2, NVIDIA's Source Code License-NC (research or
# evaluation use only), inherited from stylegan2-pytorch: the card names both, and no single SPDX id fits.
SINCUT_LICENSE_NAME = "bsd-2-clause-and-nvidia-source-code-license-nc"
SINCUT_LICENSE_NOTE = ("the paper's code is BSD 2-clause (" + OFFICIAL_COPYRIGHT + "); SinCUT's StyleGAN2 networks "
                       "derive from stylegan2-pytorch (MIT, Copyright (c) 2019 Kim Seonghyeon), for which the "
                       "official LICENSE also lists NVIDIA's Source Code License-NC (Copyright (c) 2019, NVIDIA "
                       "Corporation; non-commercial use): check it before any commercial use")

__all__ = ["OFFICIAL_COPYRIGHT", "OFFICIAL_LICENSE", "OFFICIAL_PRETRAINED_URL", "PAPER_FID", "convert"]


def license_metadata(mode: str | None) -> dict[str, str]:
    """The card's licence metadata for weights converted from the official release."""
    if mode == "sincut":
        return {"license": "other", "license_name": SINCUT_LICENSE_NAME, "license_link": OFFICIAL_LICENSE_URL}
    return {"license": OFFICIAL_LICENSE}


def license_line(mode: str | None) -> str:
    """The card's licence row: the licence and the copyright line it carries."""
    if mode == "sincut":
        return SINCUT_LICENSE_NOTE + f" ([LICENSE]({OFFICIAL_LICENSE_URL}))"
    return f"BSD 2-clause, {OFFICIAL_COPYRIGHT} ([LICENSE]({OFFICIAL_LICENSE_URL}), the paper's code and weights)"


# --------------------------------------------------------------------------------------------
# Writing the folders and their cards
# --------------------------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _domains(name: str | None) -> tuple[str | None, str | None]:
    """``horse2zebra`` -> (horse, zebra); names without one ``2`` between two words -> (None, None)."""
    if name and re.fullmatch(r"[A-Za-z_]+2[A-Za-z_]+", name) and name.count("2") == 1:
        a, b = name.split("2")
        return a.replace("_", " "), b.replace("_", " ")
    return None, None


def _architecture_line(kind: str, config: Mapping[str, Any]) -> str:
    if kind == "generator":
        return (f"ngf {config['ngf']}, {config['n_blocks']} residual blocks, {config['input_nc']} -> "
                f"{config['output_nc']} channels, {config['norm']} norm, anti-aliased down/up sampling "
                f"{'on' if config['antialias'] else 'off'}/{'on' if config['antialias_up'] else 'off'}, "
                f"dropout {'on' if config['dropout'] else 'off'}")
    if kind == "discriminator":
        return (f"ndf {config['ndf']}, {config['n_layers']} strided stages, {config['input_nc']} input channels, "
                f"{config['norm']} norm, anti-aliased {'on' if config['antialias'] else 'off'}")
    if kind == "sampler":
        return f"MLPs for feature channels {config['in_channels']}, embedding size {config['nc']}"
    return ", ".join(f"{k} {v}" for k, v in config.items())  # a kind without a sentence of its own


def _provenance(slot: str, path: Path, config: Mapping[str, Any], n_tensors: int, *, name: str | None,
                mode: str | None, source: str, command: str) -> str:
    """Markdown for the card's Provenance section: where the weights came from and how."""
    rows = [
        ("paper", f"Park, Efros, Zhang, Zhu, *Contrastive Learning for Unpaired Image-to-Image Translation*, "
                  f"ECCV 2020 ([arXiv]({PAPER_URL}))"),
        ("original release", f"[{OFFICIAL_REPO_URL.split('github.com/')[1]}]({OFFICIAL_REPO_URL}); "
                             f"weights from {source}"),
        ("source file", f"`{path.name}`, SHA-256 `{_sha256(path)}`"),
        ("mode", MODES[mode].title if mode else "not stated at conversion"),
        ("dataset", name or "not stated at conversion"),
        ("architecture (inferred)", _architecture_line(getattr(MODES[mode or "cut"], slot), config)),
        ("check", f"all {n_tensors} tensors loaded with `strict=True` (names and shapes of the original)"),
        ("conversion", f"`{command}` (cut-hf {__version__})"),
        ("licence", license_line(mode)),
    ]
    fid = PAPER_FID.get((name or "", mode or ""))
    if slot == "generator" and fid is not None:
        rows.append(("paper's FID", f"{fid} on the {name} test split (as reported in the paper; not re-measured "
                                    "by the conversion, see `cut-hf evaluate`)"))
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    intro = (f"These weights are the official {MODES[mode].title if mode else 'CUT'} release converted to the cut-hf "
             "format: the numbers are unchanged, only the container is (safetensors + config.json).")
    if slot != "generator":
        sub = next(s for k, s, _ in SLOTS if k == slot)
        intro += (f" It lives in the `{sub}/` subfolder of the generator's repository: its class's "
                  "`from_pretrained(repo_id)` finds it there (or download the repository with "
                  "`huggingface_hub.snapshot_download(repo_id)` and pass the folder).")
    return f"{intro}\n\n| | |\n|---|---|\n{table}"


def _save(model: OfficialModel, out: Path, card_kwargs: dict[str, Any], extra_tags: Sequence[str],
          licence: Mapping[str, str]) -> None:
    """``save_pretrained`` plus a card rendered from the model's template with our metadata
    (``licence``: the official weights' licence, not cut-hf's MIT)."""
    model.save_pretrained(out)
    card = model.generate_model_card(**card_kwargs)
    card.data["tags"] = list(dict.fromkeys([*card.data.get("tags", []), *(t for t in extra_tags if t)]))
    for key, value in licence.items():
        card.data[key] = value
    card.save(out / "README.md")  # replaces any card of an earlier conversion in the same folder


def _read_parts(sources: Sequence[str | os.PathLike | None], mode: str | None) -> list[tuple[str, Path, OfficialModel]]:
    """(slot, source, model) for each given checkpoint, all read and checked before anything is written."""
    kinds = MODES[mode or "cut"]
    return [(slot, Path(src), load_official(src, getattr(kinds, slot)))
            for (slot, _, _), src in zip(SLOTS, sources, strict=True) if src is not None]


def _warn_on_sampler_mismatch(parts: Sequence[tuple[str, Path, OfficialModel]]) -> None:
    """The sampler's MLP inputs should fit the generator's default NCE layers; say so when not."""
    generator = parts[0][2]
    sampler = next((m for slot, _, m in parts if slot == "sampler"), None)
    if not isinstance(sampler, PatchSampler) or not isinstance(generator, CUTGenerator):  # others pick their own layers
        return
    expected = nce_channels(generator.hub_config())
    if list(sampler.in_channels) != expected:
        print(f"warning: the sampler's MLP inputs {sampler.in_channels} do not match the generator's default "
              f"NCE layers {list(generator.nce_layers)} (channels {expected}); "
              "pass the right nce_layers when training on", file=sys.stderr)


def _card_kwargs(slot: str, src: Path, model: OfficialModel, *, name: str | None, mode: str | None, source: str,
                 command: str, push_to_hub: str | None) -> dict[str, Any]:
    """Template values of one converted folder's card."""
    mode_title = MODES[mode].title if mode else "CUT"
    config = model.hub_config()
    kwargs: dict[str, Any] = dict(provenance=_provenance(slot, src, config, len(model.state_dict()), name=name,
                                                         mode=mode, source=source, command=command))
    if slot == "generator":
        domain_a, domain_b = _domains(name)
        kwargs.update(
            model_name=f"{mode_title} {name or 'generator'} (official weights)",
            mode_title=mode_title, domain_a=domain_a, domain_b=domain_b, repo_id=push_to_hub,
            description=(f"The {mode_title} generator published by the paper's authors"
                         f"{f' for {name}' if name else ''}, converted without retraining."),
        )
    else:
        title = next(t for s, _, t in SLOTS if s == slot)
        kwargs["model_name"] = f"{mode_title} {name + ' ' if name else ''}{title} (official weights)"
    return kwargs


def convert(
    checkpoint: str | os.PathLike,
    output: str | os.PathLike,
    *,
    netD: str | os.PathLike | None = None,
    netF: str | os.PathLike | None = None,
    name: str | None = None,
    mode: str | None = None,
    source: str = OFFICIAL_PRETRAINED_URL,
    push_to_hub: str | None = None,
    private: bool | None = None,
    command: str | None = None,
) -> Path:
    """Convert official CUT checkpoints to a ``from_pretrained`` folder (and optionally push it).

    Args:
        checkpoint: the generator, e.g. ``checkpoints/horse2zebra_cut_pretrained/latest_net_G.pth``.
        output: folder to write; the generator at its root, ``discriminator/`` and ``sampler/`` beside.
        netD: optional ``latest_net_D.pth`` to convert too.
        netF: optional ``latest_net_F.pth`` to convert too.
        name: dataset name for the card (``horse2zebra``); ``a2b`` names give the card its domains.
        mode: a :data:`~cut_hf.official.checkpoints.MODES` key: ``"cut"`` or ``"fastcut"`` (recorded in the
            card; both share one architecture), or ``"sincut"`` (StyleGAN2 networks).
        source: where the checkpoint came from, for the card (the official tarball by default).
        push_to_hub: a Hub repository id to upload the whole folder to.
        private: visibility of a repository created by the push.
        command: the command line to record in the card (the CLI passes its own).

    Returns:
        The output folder. Raises :class:`ConversionError` (one-line message) on any refused input.
    """
    if mode is not None and mode not in MODES:
        raise ConversionError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise ConversionError(f"output {str(out)!r} exists and is not a folder")
    command = command or "cut_hf.official.convert.convert(" + ", ".join(
        [repr(str(checkpoint))] + [f"{k}={v!r}" for k, v in dict(netD=netD, netF=netF, name=name, mode=mode).items()
                                   if v is not None]) + ")"
    parts = _read_parts((checkpoint, netD, netF), mode)  # a refused netF leaves no half-written folder
    _warn_on_sampler_mismatch(parts)
    extra_tags = [name or "", mode or "", "converted-from-official"]
    for slot, src, model in parts:
        sub = next(s for k, s, _ in SLOTS if k == slot)
        card = _card_kwargs(slot, src, model, name=name, mode=mode, source=source, command=command,
                            push_to_hub=push_to_hub)
        _save(model, out / sub if sub else out, card, extra_tags, license_metadata(mode))
    if push_to_hub:
        mode_title = MODES[mode].title if mode else "CUT"
        api = HfApi()
        repo_id = api.create_repo(repo_id=push_to_hub, private=private, exist_ok=True).repo_id
        api.upload_folder(
            repo_id=repo_id, repo_type="model", folder_path=out,
            commit_message=f"Official {mode_title} weights{f' ({name})' if name else ''} converted with cut-hf",
        )
    return out
