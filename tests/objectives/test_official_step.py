"""cut-hf's CUT / FastCUT training step against the paper's, step for step (issue 11).

From identical weights and batches, three optimisation steps of ours and of
``tests.reference.official.OfficialCUTModel`` (an independent re-implementation of the official
``CUTModel.optimize_parameters``: forward, D step, then G and F step) must give the same loss terms
at every step and the same weights afterwards (fp32, CPU).

Randomness is fixed the same way on both sides, outside the code under test: patch locations come
from one seeded generator per side (a wrapper on each sampler's ``forward`` supplies the key call's
ids), and FastCUT's flip coin is chosen per batch (``batch["flip"]``). Our models run as built
(fast ops at their default, contiguous memory format: train.py applies channels-last on some
machines, which changes the rounding only).

Adam turns rounding noise into full steps where a gradient is (nearly) zero, so two correct
implementations cannot agree to 1e-5 on every single value; the paper's code run with 1 and with 2
CPU threads does not either. Hence:
- conv biases that feed an instance norm (and whose conv output is no PatchNCE feature) have a true
  gradient of exactly 0 (the norm subtracts the channel mean): what backward returns is rounding
  noise, and Adam moves each of them by about +-lr in a random direction. For those the test only
  checks that both sides moved them by no more than Adam's early steps can (2 lr per step);
- every other tensor must agree to 1e-5 in all but at most 1 in 10,000 of its values (a value whose
  gradient is ~1e-7 of its tensor's largest sits on the same noise floor: about 1 in 65,536 of the
  MLPs' second-layer weights lands there at this size), and none may differ by more than 2 lr per step.
The losses must agree at every step (rel and abs 1e-5): they would not if the order of operations,
a loss term or the optimiser's settings differed (running the G step before the D step, or not
flipping FastCUT's queries back, fails at step 1).

The first-step test is robust. The three-step one follows a trajectory that rounding can steer: at
this initialisation (xavier gain 0.02) one Adam step is a large fraction of a weight, so a single
noise-driven sign can move later losses visibly. The test seed (conftest) passes with a wide margin;
over 6 seeds x 2 modes x fast ops on/off, 3 of 24 runs went past these tolerances at step 2 or 3, and
the paper's code against itself in channels-last differs as much. If it fails on another machine
while the first-step test passes, suspect rounding before the objective.
"""

from __future__ import annotations


import pytest
import torch

import cut_hf.cli.train as train
from cut_hf import CUTGenerator, PatchDiscriminator, PatchSampler

from tests.reference.official import (
    NLayerDiscriminator,
    OfficialCUTModel,
    PatchSampleF,
    ResnetGenerator,
    cut_options,
    get_norm_layer,
)

def our_steps(generator, discriminator, sampler, batches, mode, flags=()):
    """Run cut-hf's training step once per batch; returns (losses per step, state dicts G/D/F).

    The one place that knows how our objective is called: ``cut_hf.objectives.cut.CUTObjective``
    with the config, learning rate and betas that ``train.py --mode MODE`` builds. ``batch["flip"]``
    is the flip coin wanted for that step: the objective draws it as ``torch.rand(()) < 0.5`` from
    the global RNG, so the seed is set to one that gives it.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    from cut_hf.objectives.cut import CUTObjective, build_optimizers

    config = train.parse_args(["--mode", mode, "--nce-layers", ",".join(map(str, generator.nce_layers)),
                                         "--num-patches", str(sampler.num_patches), *flags])
    accelerator = Accelerator(cpu=True)
    try:
        opt_g, opt_d = build_optimizers(generator, discriminator, sampler, config.lr, (config.beta1, config.beta2))
        objective, (opt_g, opt_d) = CUTObjective.prepared(accelerator, generator, discriminator, sampler,
                                                          config.objective(), opt_g, opt_d)
        losses = []
        for batch in batches:
            torch.manual_seed(_seed_for_coin(batch["flip"]))
            step_losses = objective.training_step(batch, (opt_g, opt_d), accelerator)
            losses.append({k: float(v) for k, v in step_losses.items() if not k.startswith("skipped")})
    finally:  # Accelerate keeps process-wide state: leave none behind for other tests
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
    return losses, {"G": generator.state_dict(), "D": discriminator.state_dict(), "F": sampler.state_dict()}


def _seed_for_coin(flip: bool) -> int:
    for seed in range(100):
        torch.manual_seed(seed)
        if bool(torch.rand(()) < 0.5) == flip:
            return seed
    raise AssertionError("no seed gives that coin")


# ----------------------------------------------------------------------------- the comparison

NGF, NDF, N_BLOCKS, SIZE = 8, 8, 2, 32
NCE_LAYERS = (0, 4, 8, 12, 13)  # input, the two stride-1 down convs, both residual blocks
NUM_PATCHES = 256
FLIPS = (True, False, True)  # FastCUT's coin per step: both branches are exercised
LR, STEPS = 2e-4, 3


def fixed_patch_ids(sampler: torch.nn.Module, seed: int) -> None:
    """Make ``sampler`` draw its patch locations from a private generator (same ids on both sides)."""
    forward, rng = sampler.forward, torch.Generator().manual_seed(seed)

    def seeded(feats, num_patches=None, patch_ids=None, **kwargs):
        n = sampler.num_patches if num_patches is None else num_patches
        if patch_ids is None and n > 0:
            patch_ids = [torch.randperm(f.shape[2] * f.shape[3], generator=rng)[: min(n, f.shape[2] * f.shape[3])]
                         for f in feats]
        return forward(feats, num_patches, patch_ids, **kwargs)

    sampler.forward = seeded


def make_batches(mode: str) -> list[dict]:
    rng = torch.Generator().manual_seed(5)
    flips = FLIPS if mode == "fastcut" else (False,) * STEPS
    return [{"A": torch.rand(1, 3, SIZE, SIZE, generator=rng) * 2 - 1,
             "B": torch.rand(1, 3, SIZE, SIZE, generator=rng) * 2 - 1, "flip": flip} for flip in flips]


def reference_steps(init: dict, batches: list[dict], mode: str):
    """The official order: data-dependent init on the first batch (builds netF's MLPs), then the steps."""
    net_g = ResnetGenerator(3, 3, NGF, norm_layer=get_norm_layer("instance"), n_blocks=N_BLOCKS)
    net_d = NLayerDiscriminator(3, NDF, 3, norm_layer=get_norm_layer("instance"))
    net_f = PatchSampleF(use_mlp=True)
    model = OfficialCUTModel(net_g, net_d, net_f, cut_options(mode, nce_layers=NCE_LAYERS, num_patches=NUM_PATCHES))
    model.data_dependent_initialize(batches[0])
    for net, key in ((net_g, "G"), (net_d, "D"), (net_f, "F")):
        net.load_state_dict(init[key])
    fixed_patch_ids(net_f, 7)
    coins = iter(0.0 if b["flip"] else 0.9 for b in batches)
    model.random = lambda: next(coins)
    losses = []
    for batch in batches:
        model.set_input(batch)
        model.optimize_parameters()
        losses.append(model.current_losses())
    return losses, {"G": net_g.state_dict(), "D": net_d.state_dict(), "F": net_f.state_dict()}, (net_g, net_d)


def zero_gradient_biases(net: torch.nn.Module, nce_layers=()) -> set[str]:
    """Biases of convs followed by an instance norm, except convs whose output PatchNCE reads."""
    names = set()
    for prefix, seq in net.named_modules():
        if not isinstance(seq, torch.nn.Sequential):
            continue
        for i in range(len(seq) - 1):
            conv, norm = seq[i], seq[i + 1]
            if (isinstance(conv, torch.nn.Conv2d) and conv.bias is not None and isinstance(norm, torch.nn.InstanceNorm2d)
                    and not (prefix == "model" and i in nce_layers)):
                names.add(f"{prefix}.{i}.bias")
    return names


def run_both(mode: str, steps: int, exact: bool = False):
    """Initial weights, the reference's losses and weights, ours, and the reference's G and D.

    ``exact``: the official ops (``fast_ops=False``) and, for CUT, keys from a second encoder pass
    (``--no-reuse-features``), as the paper's code computes them."""
    generator = CUTGenerator(ngf=NGF, n_blocks=N_BLOCKS, nce_layers=NCE_LAYERS, fast_ops=not exact)
    discriminator = PatchDiscriminator(ndf=NDF)
    sampler = PatchSampler(generator.feature_channels(), num_patches=NUM_PATCHES)
    init = {k: {n: t.detach().clone() for n, t in m.state_dict().items()}
            for k, m in (("G", generator), ("D", discriminator), ("F", sampler))}
    batches = make_batches(mode)[:steps]
    ref_losses, ref_weights, ref_nets = reference_steps(init, batches, mode)
    fixed_patch_ids(sampler, 7)
    ours = our_steps(generator, discriminator, sampler, batches, mode, ["--no-reuse-features"] if exact else [])
    return init, (ref_losses, ref_weights), ours, ref_nets


def assert_same_steps(mode: str, steps: int, tol: float = 1e-5, rare: int | None = 10_000) -> None:
    """Losses to ``tol`` at every step; each tensor to 1e-5 in all but 1 in ``rare`` of its values
    (``None``: the bulk of each tensor to a fraction of lr, and every value to the 2 lr per step bound)."""
    init, (ref_losses, ref_weights), (our_losses, our_weights), (net_g, net_d) = run_both(mode, steps)
    assert len(our_losses) == len(ref_losses) == steps
    for step, (ours, ref) in enumerate(zip(our_losses, ref_losses), 1):
        assert set(ours) == set(ref), f"step {step}: loss terms {sorted(ours)} vs official {sorted(ref)}"
        for name in ref:
            assert ours[name] == pytest.approx(ref[name], rel=tol, abs=tol), f"step {step} {name}"

    noise = {"G": zero_gradient_biases(net_g, NCE_LAYERS), "D": zero_gradient_biases(net_d), "F": set()}
    assert noise["G"] and noise["D"]
    bound = 2 * LR * steps  # Adam's early steps move a value by at most ~2 lr each
    for net in "GDF":
        assert set(our_weights[net]) == set(ref_weights[net])
        for key, ref in ref_weights[net].items():
            ours = our_weights[net][key]
            if key in noise[net]:  # rounding-noise gradients: each side moves by about lr per step
                for side in (ours, ref):
                    assert (side - init[net][key]).abs().max() <= bound, f"{net} {key}"
                continue
            diff = (ours.float() - ref.float()).abs()
            if rare is not None:
                off = int((diff > 1e-5).sum())
                assert off <= diff.numel() // rare, f"{net} {key}: {off} of {diff.numel()} values differ by > 1e-5"
            elif ref.is_floating_point() and diff.numel() > 1:
                # Each value moved by ~1.7 lr over three steps. Rounding steers only a few of them: the
                # median difference stays under lr / 20 (measured: <= lr / 250) and at most 1% of the
                # values differ by more than lr / 4 (measured: <= 0.13%, FastCUT's MLPs). Another
                # optimiser setting, lr or loss weight moves the bulk of a tensor by a good part of lr.
                assert diff.median().item() <= LR / 20, f"{net} {key}: median abs diff {diff.median().item():.2e}"
                far = (diff > LR / 4).float().mean().item()
                assert far <= 0.01, f"{net} {key}: {far:.2%} of the values differ by > lr / 4"
            assert diff.max().item() <= bound, f"{net} {key}: max abs diff {diff.max().item():.2e}"
        moved = max((our_weights[net][k] - init[net][k]).abs().max().item() for k in init[net])
        assert moved > LR / 2  # the steps did update this network


@pytest.mark.parametrize("mode", ["cut", "fastcut"])
def test_first_step_matches_the_official_step(mode):
    """One step (FastCUT's coin: flip): no earlier step can have amplified rounding yet."""
    assert_same_steps(mode, 1)


@pytest.mark.parametrize("mode", ["cut", "fastcut"])
def test_three_steps_match_the_official_step(mode):
    """Three steps with the fast ops (FastCUT's coins: flip, no flip, flip): Adam's moments carried
    across steps. The fast ops round differently, and Adam amplifies rounding where gradients are
    near zero (see the module docstring), so losses are held to 1e-3, the bulk of every tensor to
    lr / 20 (median) and lr / 4 (99%), and each value to the 2 lr per step bound; the bitwise test
    below holds the objective itself to the last bit."""
    assert_same_steps(mode, STEPS, tol=1e-3, rare=None)


@pytest.mark.parametrize("mode", ["cut", "fastcut"])
def test_official_ops_are_bitwise_the_official_step(mode):
    """With the official ops and no key reuse, three steps are the paper's to the last bit in every
    weight, the noise-driven biases included (the same arithmetic in the same order). The reported
    NCE values may differ in the last bit: the paper scales by lambda before the mean, we after it
    (the gradients are the same bits)."""
    _, (ref_losses, ref_weights), (our_losses, our_weights), _ = run_both(mode, STEPS, exact=True)
    for ours, ref in zip(our_losses, ref_losses):
        assert ours == pytest.approx(ref, rel=1e-6, abs=0)
    for net in "GDF":
        for key, ref in ref_weights[net].items():
            assert torch.equal(our_weights[net][key], ref), f"{net} {key}"
