"""(p) The paper path: the baseline every speed-up is measured against, alternating with ours in one process.

Built from the independent re-implementation of the official networks and training step in
``tests/reference/official.py`` (``OfficialCUTModel.optimize_parameters``: keys from a second
encoder pass, official ops, NCHW, fp32; its test path: ToTensor + Normalize, G under ``no_grad``,
``tensor2im``), loaded from its path: the bench imports no test package.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from types import ModuleType
from typing import Any

import torch

from bench.common import REPO, Config, alternate
from bench.train_step import build_train_case, model_config, resolved_defaults


def official_reference() -> ModuleType:
    """``tests/reference/official.py``, loaded from its path."""
    spec = importlib.util.spec_from_file_location("official_reference", REPO / "tests" / "reference" / "official.py")
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"the paper path needs {REPO / 'tests' / 'reference' / 'official.py'}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_paper_step(mode: str, cfg: Config, device: torch.device, size: int) -> Callable[[], None]:
    """One training step of the paper's code on a fixed random batch: the official networks (train.py's
    sizes), the official ``optimize_parameters`` order (keys from a second encoder pass), official ops,
    NCHW, fp32."""
    ref = official_reference()
    c = model_config(cfg)
    opt = ref.cut_options(mode, num_patches=c.num_patches)
    net_g = ref.official_generator(ngf=c.ngf, n_blocks=c.n_blocks).to(device)
    net_d = ref.official_discriminator(ndf=c.ndf).to(device)
    net_f = ref.PatchSampleF(use_mlp=True, nc=c.netf_nc).to(device)
    model = ref.OfficialCUTModel(net_g, net_d, net_f, opt)
    gen = torch.Generator().manual_seed(1)  # the batch build_train_case makes
    batch = {k: (torch.rand(1, 3, size, size, generator=gen) * 2 - 1).to(device) for k in ("A", "B")}
    model.data_dependent_initialize(batch)

    def step() -> None:
        model.optimize_parameters()
        float(torch.as_tensor(model.loss_NCE).detach())  # wait for the device
    return step


def paper_translate(net_g: torch.nn.Module, image: Any, device: torch.device) -> Any:
    """The paper code's test path for one PIL image: ToTensor + Normalize(0.5, 0.5), G under
    ``no_grad`` in fp32 NCHW, then ``tensor2im`` ((y + 1) / 2 * 255 as uint8)."""
    import numpy as np
    from PIL import Image

    x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(255).sub(0.5).div(0.5)[None].to(device)
    with torch.no_grad():
        y = net_g(x)
    arr = ((y[0].float().cpu().permute(1, 2, 0).numpy() + 1) / 2.0 * 255.0).astype(np.uint8)
    return Image.fromarray(arr)


def run_paper_case(case: dict[str, Any], cfg: Config, device: torch.device, size: int) -> dict[str, Any]:
    """One case against the paper path, alternating in this process: a training step (``case["kind"]``
    ``train``, the case built as train.py builds it) or a ``translate()`` call of one RGB image."""
    if case["kind"] == "train":
        paper = build_paper_step(case["mode"], cfg, device, size)
        _, ours = build_train_case(case, cfg, device, size, reset_state=not cfg.isolate)
        return alternate(paper, ours, device, cfg.warmup, cfg.pair_rounds)
    import numpy as np
    from PIL import Image

    from cut_hf import translate
    from cut_hf.cli.train import build_models

    c = model_config(cfg)
    net_g = official_reference().official_generator(ngf=c.ngf, n_blocks=c.n_blocks).to(device).eval()
    generator = build_models(c)[0].eval()  # train.py's generator with its defaults: fast ops
    generator.load_state_dict(net_g.state_dict())  # same weights, same outputs within tolerance
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8))
    result = alternate(lambda: paper_translate(net_g, image, device),
                       lambda: translate(generator, image, precision=case["precision"], device=device),
                       device, cfg.warmup, cfg.translate_reps)
    diff = np.abs(np.asarray(paper_translate(net_g, image, device), dtype=int)
                  - np.asarray(translate(generator, image, precision=case["precision"], device=device), dtype=int))
    result["max_grey_level_difference"] = int(diff.max())
    return result


def paper_cases(cfg: Config, device: torch.device) -> list[dict[str, Any]]:
    """What is compared with the paper path: the training step of CUT and FastCUT with train.py's
    defaults in fp32 and bf16, and translate() at each translate size in fp32 and bf16."""
    cases: list[dict[str, Any]] = []
    for mode in ("cut", "fastcut"):
        for precision in ("fp32", "bf16"):
            cases.append({"name": f"{mode} train {precision}", "kind": "train", "mode": mode, "size": cfg.size,
                          **resolved_defaults(device, precision)})
    for size in cfg.translate_sizes:
        for precision in ("fp32", "bf16"):
            cases.append({"name": f"translate {precision}", "kind": "translate", "size": size,
                          "precision": precision})
    return cases
