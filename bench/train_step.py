"""(b) The training step as ``train.py`` builds it, its variants, (b') paired variants and (g) the GPU check.

Every case is a set of ``train.py`` flags: :func:`train_config` hands them to train's own parser
(:func:`cut_hf.cli.train.parse_args`), and :func:`build_train_case` builds the models, fast paths,
optimisers and objective with :func:`cut_hf.cli.train.setup_training`, so the bench times what
``train.py`` runs with its defaults, never a copy of them.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import torch

from bench.common import Config, alternate, count_flops, memory_begin, memory_end, summary, timed
from bench.roofline import adjacent_roofline
from cut_hf import perf
from cut_hf.cli.train import parse_args, setup_training
from cut_hf.training.tasks.cut import CUTTrainConfig

#: The paper code's path: fp32, NCHW, eager, PatchNCE keys from a second encoder pass, official ops.
PLAIN = {"precision": "fp32", "channels_last": False, "compile": False, "reuse": False, "fast_ops": False}

#: FLOPs per training step at 256x256 with train.py's model (refined once a case is measured).
STATIC_FLOPS = {"cut": 1.45e12, "fastcut": 0.72e12}
STATIC_NGF = 64  # the generator width STATIC_FLOPS were counted at

#: The paper's published training speed (s/iter, 256 px, batch 1, on its GPU): CUT and FastCUT.
PAPER_S_PER_ITER = {"cut": 0.24, "fastcut": 0.15}


# ------------------------------------------------------------------------------ train.py's flags
def model_config(cfg: Config, fast_ops: bool = True) -> CUTTrainConfig:
    """train.py's configuration with only the run's model flags (``cfg.model_flags``) given."""
    return parse_args(["--data-dir", "unused", *cfg.model_flags, *([] if fast_ops else ["--no-fast-ops"])])


def train_argv(case: dict[str, Any], cfg: Config, size: int) -> list[str]:
    """train.py flags of one case (``--compile`` is left to the case when it names a compile mode)."""
    argv = ["--data-dir", "unused", "--mode", case["mode"], "--crop-size", str(size), "--load-size", str(size),
            "--mixed-precision", "no" if case["precision"] == "fp32" else case["precision"], "--report-to", "none",
            "--num-workers", "0", *cfg.model_flags]
    if not case["reuse"]:
        argv.append("--no-reuse-features")
    argv.append("--channels-last" if case["channels_last"] else "--no-channels-last")
    if case["compile"] and not case.get("compile_mode"):
        argv.append("--compile")
    if not case["fast_ops"]:
        argv.append("--no-fast-ops")
    return argv


def train_config(case: dict[str, Any], cfg: Config, size: int) -> CUTTrainConfig:
    """The frozen configuration train.py makes of one case's flags."""
    return parse_args(train_argv(case, cfg, size))


def resolved_defaults(device: torch.device, precision: str | None = None) -> dict[str, Any]:
    """What ``train.py`` does when given no performance flags (but ``--mixed-precision``), on this device."""
    precision = precision or "fp32"
    c = parse_args(["--data-dir", "unused", "--mixed-precision", "no" if precision == "fp32" else precision])
    channels_last = perf.channels_last_default(device, precision) if c.channels_last is None else c.channels_last
    return {"precision": precision, "channels_last": channels_last, "compile": c.compile, "reuse": c.reuse_features,
            "fast_ops": c.fast_ops}


# ----------------------------------------------------------------------------------- one case
def build_train_case(case: dict[str, Any], cfg: Config, device: torch.device, size: int,
                     reset_state: bool | None = None) -> tuple[CUTTrainConfig, Callable[[], None]]:
    """The objective of one case, built by train.py's ``setup_training``, and a fixed random batch:
    (configuration, one step).

    ``reset_state`` (default: for in-process runs) drops Accelerate's process-wide state first, so
    that a case brings its own mixed precision; a paired run builds its second side without it.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import set_seed

    config = train_config(case, cfg, size)
    if (not cfg.isolate) if reset_state is None else reset_state:
        AcceleratorState._reset_state(reset_partial_state=True)
    accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=device.type == "cpu")
    if device.type == "cpu":  # as train.py's setup; process-wide, so a paper path in this process gets it too
        perf.keep_freed_memory()
    set_seed(0)
    objective, optimizers, _ = setup_training(config, accelerator)
    mode = case.get("compile_mode")  # e.g. "reduce-overhead": CUDA graphs, a mode train.py's --compile leaves out
    if case["compile"] and mode:
        perf.compile_generator(objective.generator, mode=mode)
        objective.discriminator.compile(mode=mode)
    gen = torch.Generator().manual_seed(1)
    batch = {k: (torch.rand(config.batch_size, channels, size, size, generator=gen) * 2 - 1)
             for k, channels in (("A", config.input_nc), ("B", config.output_nc))}

    def step() -> None:
        losses = objective.training_step(batch, optimizers, accelerator)
        float(losses["NCE"])  # wait for the device and keep the work from being optimised away

    return config, step


def run_train_case(case: dict[str, Any], cfg: Config, device: torch.device, size: int) -> dict[str, Any]:
    """Time ``CUTObjective.training_step`` for one variant; FLOPs by replaying the timed steps."""
    config, step = build_train_case(case, cfg, device, size)

    # FLOPs are counted after the timed steps and outside the memory window: under FlopCounterMode
    # some ops run decomposed and allocate more, which would set the peak. The count is constant per
    # step unless FastCUT's random flip decides whether the PatchNCE keys are recomputed (reuse on);
    # then the timed steps are replayed from their RNG state and each is counted.
    # Compiled graphs and FlopCounterMode do not mix: compiled cases take their eager twin's count.
    count = not case["compile"]
    replay = count and config.flip_equivariance and config.reuse_features
    roof_before = adjacent_roofline(case, device, cfg.roofline_seconds)
    base = memory_begin(device)
    warm = [timed(step, device) for _ in range(cfg.warmup)]
    rng = torch.get_rng_state()  # the timed steps' flips and patch draws
    times = [timed(step, device) for _ in range(cfg.steps)]
    mem = memory_end(device, base)
    roof_after = adjacent_roofline(case, device, cfg.roofline_seconds)
    flops = []
    if replay:
        torch.set_rng_state(rng)
        flops = [count_flops(step) for _ in range(cfg.steps)]
    elif count:
        flops = [count_flops(step)]
    result: dict[str, Any] = {"seconds": summary(times), "warmup_s": [round(t, 3) for t in warm], "memory": mem,
                              "roofline_adjacent": [roof_before, roof_after]}
    if flops:
        result["flops"] = statistics.mean(flops)
        result["flops_per_step"] = flops
    return result


def run_pair_case(case: dict[str, Any], cfg: Config, device: torch.device, size: int) -> dict[str, Any]:
    """(b') Steps of two training variants in turn in one process (A, B, A, B, ...; see
    :func:`bench.common.alternate`). Both must share a precision (one ``Accelerator`` per process)."""
    a, b = case["a"], case["b"]
    if a["precision"] != b["precision"]:
        raise ValueError("a paired comparison needs one precision for both variants")
    _, step_a = build_train_case(a, cfg, device, size)
    _, step_b = build_train_case(b, cfg, device, size, reset_state=False)  # B shares A's Accelerator state
    return alternate(step_a, step_b, device, cfg.warmup, cfg.pair_rounds)


# --------------------------------------------------------------------------------- the variants
def train_cases(variants: str, defaults: dict[str, Any], defaults_bf16: dict[str, Any],
                quick: bool) -> list[dict[str, Any]]:
    """Training variants, each a dict with a ``name``; duplicates are merged (names joined)."""
    cases: list[dict[str, Any]] = []
    if variants == "grid":
        for precision in ("fp32", "bf16"):
            for cl in (False, True):
                for comp in (False, True):
                    for reuse in (False, True):
                        for fast in (False, True):
                            cases.append({"mode": "cut", "precision": precision, "channels_last": cl,
                                          "compile": comp, "reuse": reuse, "fast_ops": fast})
    else:
        one_at_a_time: list[tuple[str, dict[str, Any]]] = [
            ("plain", {}), ("+fast_ops", {"fast_ops": True}), ("+reuse", {"reuse": True}),
            ("+channels_last", {"channels_last": True}), ("+bf16", {"precision": "bf16"}),
            ("+bf16+channels_last", {"precision": "bf16", "channels_last": True})]
        if quick:  # the smoke check: each switch once; no compile (its compile time alone is a minute)
            one_at_a_time = [v for v in one_at_a_time if v[0] != "+bf16"]
        for name, change in one_at_a_time:
            cases.append({"name": name, "mode": "cut", **PLAIN, **change})
        cases.append({"name": "defaults", "mode": "cut", **defaults})
        if not quick:
            # compile on top of the defaults: on the plain path (official transposed-blur Upsample)
            # inductor fails in replication_pad2d_backward's meta kernel (torch 2.14, bench/RESULTS.md)
            cases.append({"name": "defaults+compile", "mode": "cut", **defaults, "compile": True})
        cases.append({"name": "defaults+bf16", "mode": "cut", **defaults_bf16})
        cases.append({"name": "fastcut plain", "mode": "fastcut", **PLAIN})
        cases.append({"name": "fastcut defaults", "mode": "fastcut", **defaults})
    return merge_duplicates(cases)


def pair_cases(defaults: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Paired comparisons (name, a, b): the plain path against the fp32 defaults, CUT and FastCUT."""
    fp32 = {**defaults, "precision": "fp32"}
    return [("plain -> defaults", {"mode": "cut", **PLAIN}, {"mode": "cut", **fp32}),
            ("fastcut plain -> defaults", {"mode": "fastcut", **PLAIN}, {"mode": "fastcut", **fp32})]


def gpu_cases() -> list[dict[str, Any]]:
    """(g) The GPU check's training cases: CUT and FastCUT, fp32 and bf16, channels-last, eager,
    compiled, and compiled with CUDA graphs (``mode="reduce-overhead"``), most informative first."""
    cases = []
    for variant, comp, mode in (("eager", False, None), ("compiled", True, None),
                                ("compiled+cudagraphs", True, "reduce-overhead")):
        for precision in ("bf16", "fp32"):
            for cut_mode in ("cut", "fastcut"):
                cases.append({"name": f"{cut_mode} {precision} {variant}", "mode": cut_mode, "precision": precision,
                              "channels_last": True, "compile": comp, "compile_mode": mode, "reuse": True,
                              "fast_ops": True})
    return cases


def merge_duplicates(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: dict[tuple, dict[str, Any]] = {}
    for c in cases:
        key = tuple(sorted((k, v) for k, v in c.items() if k != "name"))
        if key in out:
            out[key]["name"] += f" = {c.get('name', '')}"
        else:
            out[key] = dict(c, name=c.get("name") or label(c))
    return list(out.values())


def label(case: dict[str, Any]) -> str:
    return " ".join([case["mode"], case["precision"], "CL" if case["channels_last"] else "NCHW",
                     "compile" if case["compile"] else "eager", "reuse" if case["reuse"] else "recompute",
                     "fast" if case["fast_ops"] else "official"])


# ----------------------------------------------------------------------------------- the budget
def planned_size(predicted_at: Callable[[int], float], size: int, budget: float, minimum: int = 32) -> int | None:
    """The largest of size, size/2, ... (>= minimum, multiples of 4) whose predicted time fits."""
    while size >= minimum:
        if predicted_at(size) <= budget:
            return size
        size = size // 2 // 4 * 4
    return None


def model_width(cfg: Config) -> float:
    """The run's generator width against the one :data:`STATIC_FLOPS` were counted at (FLOPs grow with its square)."""
    return model_config(cfg).ngf / STATIC_NGF
