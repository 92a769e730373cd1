"""SinCUT's official StyleGAN2 checkpoints: recognising them and inferring our models' configs.

The official ``netG="stylegan2"`` / ``netD="stylegan2"`` state dicts (``encoder.convs.*``,
``decoder.convs.*``; ``convs.*``, ``final_conv.*``, ``final_linear.*``) record every width, and
:mod:`cut_hf.official.checkpoints` (its ``KINDS`` table) loads them strictly into
:class:`~cut_hf.StyleGAN2Generator` / :class:`~cut_hf.StyleGAN2Discriminator` with the config
inferred here. Failures are ``ValueError`` s, which :func:`cut_hf.official.checkpoints.load_official` reports
as one-line conversion errors.

The generator's widths depend on ``ngf`` and the crop size only through ``ngf / crop`` above 32 px
(``ngf 10`` at 64 px and ``ngf 20`` at 128 px give the same network), so the inferred crop size is
the first of :data:`CROP_PREFERENCE` that explains the widths: SinCUT's 64 when it can.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from cut_hf.models.stylegan2_layers import channel_table

__all__ = [
    "CROP_PREFERENCE",
    "infer_stylegan2_discriminator_config",
    "infer_stylegan2_generator_config",
    "is_stylegan2_discriminator",
    "is_stylegan2_generator",
]

#: Crop sizes tried, in order, for a generator whose widths several (ngf, crop) pairs explain.
CROP_PREFERENCE = (64, 128, 256, 32, 512, 16, 1024, 8)
_MAX_WIDTH = 1024  # widths multipliers tried: ngf / ndf in 1 .. this
_ENC_KEY = re.compile(r"encoder\.convs\.(\d+)\.")
_DEC_KEY = re.compile(r"decoder\.convs\.(\d+)\.")
_D_KEY = re.compile(r"convs\.(\d+)\.")


def is_stylegan2_generator(state_dict: Mapping[str, torch.Tensor]) -> bool:
    first = state_dict.get("encoder.convs.1.0.weight")
    return first is not None and first.dim() == 4 and any(k.startswith("decoder.convs.") for k in state_dict)


def is_stylegan2_discriminator(state_dict: Mapping[str, torch.Tensor]) -> bool:
    first = state_dict.get("convs.0.0.weight")
    return first is not None and first.dim() == 4 and "final_linear.0.weight" in state_dict


def _indices(pattern: re.Pattern[str], state_dict: Mapping[str, torch.Tensor]) -> list[int]:
    return sorted({int(m.group(1)) for k in state_dict if (m := pattern.match(k))})


def infer_stylegan2_generator_config(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """:class:`~cut_hf.StyleGAN2Generator` arguments for an official SinCUT ``latest_net_G.pth``.

    ``encoder.convs.1`` is the 1x1 input conv; the encoder blocks with a ``skip`` halve the
    resolution; the decoder's ``conv.weight`` entries are the upsampling convs (``noise.weight``
    when noise is injected); the last decoder entry is the 1x1 output conv.
    """
    enc, dec = _indices(_ENC_KEY, state_dict), _indices(_DEC_KEY, state_dict)
    if enc[:1] != [1] or not dec or enc != list(range(1, len(enc) + 1)) or dec != list(range(len(dec))):
        raise ValueError(f"not a StyleGAN2 generator: encoder convs {enc}, decoder convs {dec}")
    down = [i for i in enc if f"encoder.convs.{i}.skip.1.weight" in state_dict]
    plain = [i for i in enc[1:] if i not in down]
    ups = [i for i in dec if f"decoder.convs.{i}.conv.weight" in state_dict]
    if down != list(range(2, 2 + len(down))) or len(ups) != len(down):
        raise ValueError(f"not a StyleGAN2 generator: {len(down)} downsampling and {len(ups)} upsampling blocks")
    # Widths: the input conv's, then each downsampling block's output.
    widths = [int(state_dict["encoder.convs.1.0.weight"].shape[0])]
    widths += [int(state_dict[f"encoder.convs.{i}.skip.1.weight"].shape[0]) for i in down]
    ngf, crop = _generator_width(widths)
    return dict(input_nc=int(state_dict["encoder.convs.1.0.weight"].shape[1]),
                output_nc=int(state_dict[f"decoder.convs.{dec[-1]}.0.weight"].shape[0]), ngf=ngf,
                n_blocks=2 * len(plain), num_downsampling=len(down), crop_size=crop,
                inject_noise=bool(ups) and f"decoder.convs.{ups[0]}.noise.weight" in state_dict)


def _generator_width(widths: list[int]) -> tuple[int, int]:
    """(ngf, crop size) whose channel table gives ``widths`` at crop, crop / 2, ..."""
    for crop in CROP_PREFERENCE:
        if crop >> (len(widths) - 1) < 4:
            continue
        for ngf in range(1, _MAX_WIDTH + 1):
            ch = channel_table(ngf / 32, cap=512, rounding=True)
            if [ch[crop >> i] for i in range(len(widths))] == widths:
                return ngf, crop
    raise ValueError(f"no ngf and crop size give the StyleGAN2 generator widths {widths}")


def infer_stylegan2_discriminator_config(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """:class:`~cut_hf.StyleGAN2Discriminator` arguments for an official SinCUT ``latest_net_D.pth``:
    one blur-pool ResBlock per halving down to 4 px gives the crop size, the widths give ``ndf``."""
    blocks = _indices(_D_KEY, state_dict)
    if blocks != list(range(len(blocks))) or any(f"convs.{i}.skip.1.weight" not in state_dict for i in blocks[1:]):
        raise ValueError(f"not a StyleGAN2 discriminator: convs {blocks}")
    size = 4 << (len(blocks) - 1)
    widths = [int(state_dict["convs.0.0.weight"].shape[0])]
    widths += [int(state_dict[f"convs.{i}.skip.1.weight"].shape[0]) for i in blocks[1:]]
    for ndf in range(1, _MAX_WIDTH + 1):
        ch = channel_table(ndf / 64, cap=384, rounding=False)
        if [ch[size >> i] for i in range(len(widths))] == widths:
            return dict(input_nc=int(state_dict["convs.0.0.weight"].shape[1]), ndf=ndf, crop_size=size)
    raise ValueError(f"no ndf gives the StyleGAN2 discriminator widths {widths} at {size} px")
