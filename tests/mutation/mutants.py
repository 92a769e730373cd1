# ruff: noqa: E501  (a mutant's original and mutated code are quoted whole, one line each where possible)
"""One-line mistakes in the numerical core, each with the few tests that name the feature it breaks.

A mutant replaces ``old`` (found exactly once in ``path``) by ``new``. ``tests`` is a short pytest
selection: the tests a reader would expect to catch that mistake, not the whole suite. ``why`` is
filled in only for a mutant expected to survive (an equivalent change), saying why.
``python -m tests.mutation.run`` applies them to a scratch copy; see its docstring.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    id: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    why: str = ""


LAYERS, GEN, DISC, SAMPLER = ("cut_hf/models/layers.py", "cut_hf/models/generator.py", "cut_hf/models/discriminator.py",
                              "cut_hf/models/patch_sampler.py")
LOSSES, CUT, SINCUT, SIMCLR = ("cut_hf/objectives/losses.py", "cut_hf/objectives/cut.py", "cut_hf/objectives/sincut.py",
                               "cut_hf/objectives/simclr.py")
INFER, CKPT, RUNTIME = "cut_hf/translation/inference.py", "cut_hf/training/checkpoints.py", "cut_hf/training/runtime.py"

T_GEN = ("tests/models/test_generator.py",)
T_GEN_OFFICIAL = ("tests/models/test_generator.py", "-k", "official or gradients")
T_DISC = ("tests/models/test_discriminator.py",)
T_SAMPLER = ("tests/models/test_patch_sampler.py",)
T_FAST = ("tests/test_fast_paths.py",)
T_NCE = ("tests/objectives/test_losses.py", "-k", "patch_nce or info_nce")
T_NTX = ("tests/objectives/test_losses.py", "-k", "nt_xent")
T_GAN = ("tests/objectives/test_losses.py", "-k", "gan_loss")
T_SINCUT = ("tests/objectives/test_sincut_losses.py",)
T_STEP = ("tests/objectives/test_official_step.py", "-k", "first_step or bitwise")
T_STEP3 = ("tests/objectives/test_official_step.py", "-k", "three_steps")
T_SIMCLR = ("tests/objectives/test_simclr.py", "-k", "anchor or partition")
T_TILE = ("tests/translation/test_pipeline.py", "-k", "tile or tiling or stat_crops or seamless")
T_TILE_FAST = ("tests/translation/test_pipeline.py", "-k", "(tile or tiling or stat_crops or seamless) and not memory")
T_CKPT = ("tests/training/test_train.py", "-k", "killed_mid_save or resume_rejects")
T_RESUME = ("tests/training/test_train.py", "-k", "resume_is_bit_identical")

MUTANTS: list[Mutant] = [
    # ------------------------------------------------------------------ layers
    Mutant("layers:blur-121-is-111", LAYERS, "3: [1.0, 2.0, 1.0]", "3: [1.0, 1.0, 1.0]", T_DISC),
    Mutant("layers:blur-1331-is-1221", LAYERS, "4: [1.0, 3.0, 3.0, 1.0]", "4: [1.0, 2.0, 2.0, 1.0]", ("tests/models/test_generator.py", "-k", "blur")),
    Mutant("layers:downsample-replicate-pad", LAYERS, "self.pad = ReflectionPad2d((lo, hi, lo, hi))",
           "self.pad = nn.ReplicationPad2d((lo, hi, lo, hi))", T_GEN_OFFICIAL),
    Mutant("layers:downsample-pooled-one-pool", LAYERS,
           "return F.avg_pool2d(F.avg_pool2d(self.pad(x), 2, stride=1), 2, stride=2)",
           "return F.avg_pool2d(self.pad(x)[..., 1:, 1:], 2, stride=2)", T_FAST),
    Mutant("layers:upsample-nearest", LAYERS, 'mode="bilinear", align_corners=False)', 'mode="nearest")', T_FAST),
    Mutant("layers:upsample-align-corners", LAYERS, 'mode="bilinear", align_corners=False)',
           'mode="bilinear", align_corners=True)', T_GEN_OFFICIAL),
    Mutant("layers:upsample-transposed-padding", LAYERS, "stride=self.stride, padding=1 + self.pad_size,",
           "stride=self.stride, padding=self.pad_size,", ("tests/objectives/test_official_step.py", "-k", "bitwise")),
    Mutant("layers:instance-norm-eps", LAYERS, "None, None, None, None, True, 0.0, self.eps,\n",
           "None, None, None, None, True, 0.0, 1e-3,\n", T_GEN_OFFICIAL),
    Mutant("layers:instance-norm-channels-last-eps", LAYERS, "True, 0.0, self.eps, False)",
           "True, 0.0, 1e-3, False)", T_FAST),
    Mutant("layers:conv-bias-with-none-norm", LAYERS, 'return norm == "instance"', 'return norm != "batch"',
           T_DISC),
    Mutant("layers:resnet-no-skip", LAYERS, "return x + self.conv_block(x)", "return self.conv_block(x)",
           ("tests/official/test_convert.py", "-k", "batchnorm")),
    Mutant("layers:init-bias-nonzero", LAYERS, "nn.init.zeros_(m.bias)\n        elif", "nn.init.constant_(m.bias, 0.01)\n        elif",
           ("tests/models/test_generator.py", "-k", "init")),
    Mutant("layers:init-xavier-uniform", LAYERS, "nn.init.xavier_normal_(m.weight, gain=gain)",
           "nn.init.xavier_uniform_(m.weight, gain=gain)", ("tests/models/test_generator.py", "-k", "init")),
    Mutant("layers:init-batchnorm-scale", LAYERS, "nn.init.normal_(m.weight, 1.0, gain)", "nn.init.normal_(m.weight, 1.0, 0.2)",
           ("tests/models/test_generator.py", "-k", "init")),
    # ------------------------------------------------------------------ generator
    Mutant("generator:hardtanh", GEN, "nn.Conv2d(ngf, output_nc, kernel_size=7), nn.Tanh()]",
           "nn.Conv2d(ngf, output_nc, kernel_size=7), nn.Hardtanh()]", ("tests/models/test_generator.py", "-k", "tanh")),
    Mutant("generator:residual-without-atanh", GEN, "torch.atanh(x.float().clamp(-0.999, 0.999))", "x.float().clamp(-0.999, 0.999)",
           ("tests/hub/test_hub.py", "-k", "residual")),
    Mutant("generator:residual-at-wrong-layer", GEN, "if self.residual and i == last else", "if self.residual and i == last - 1 else",
           ("tests/hub/test_hub.py", "-k", "residual")),
    Mutant("generator:encode-skips-inplace-relu", GEN, 'while stop + 1 < len(self.model) and getattr(',
           'while False and getattr(', ("tests/models/test_generator.py", "-k", "inplace or encode")),
    Mutant("generator:feature-channels-in", GEN, "channels = layer.out_channels", "channels = layer.in_channels",
           ("tests/models/test_generator.py", "-k", "feature_channels")),
    # ------------------------------------------------------------------ discriminator
    Mutant("discriminator:leaky-slope-first", DISC, "padding=padw), nn.LeakyReLU(0.2, True)]",
           "padding=padw), nn.LeakyReLU(0.5, True)]", T_DISC),
    Mutant("discriminator:leaky-slope-last", DISC, "norm_layer(norm, ndf * mult), nn.LeakyReLU(0.2, True),\n",
           "norm_layer(norm, ndf * mult), nn.LeakyReLU(0.5, True),\n", T_DISC),
    # ------------------------------------------------------------------ PatchSampler
    Mutant("sampler:l2-eps", SAMPLER, "eps: float = 1e-7", "eps: float = 1e-2", T_SAMPLER),
    Mutant("sampler:l2-without-sqrt", SAMPLER, "x.pow(2).sum(1, keepdim=True).pow(0.5) + eps", "x.pow(2).sum(1, keepdim=True) + eps",
           T_SAMPLER),
    Mutant("sampler:channel-major-flatten", SAMPLER, "flat = feat.permute(0, 2, 3, 1).flatten(1, 2)",
           "flat = feat.permute(0, 3, 2, 1).flatten(1, 2)", T_SAMPLER),
    Mutant("sampler:patch-ids-ignored", SAMPLER, "ids = patch_ids[i].to(feat.device)",
           "ids = torch.randperm(h * w)[: min(n, h * w)].to(feat.device)", T_SAMPLER),
    # ------------------------------------------------------------------ losses
    Mutant("losses:info-nce-positive-last", LOSSES, "logits = torch.cat([positives, negatives], dim=1)",
           "logits = torch.cat([negatives, positives], dim=1)", T_NCE),
    Mutant("losses:info-nce-times-temperature", LOSSES, ".float() / temperature  # (N, 1 + K)",
           ".float() * (1 / temperature) * 1.01  # (N, 1 + K)", T_NCE),
    Mutant("losses:nce-diagonal-minus-inf", LOSSES, "l_neg.masked_fill(eye, -10.0)", "l_neg.masked_fill(eye, 0.0)", T_NCE),
    Mutant("losses:nce-keys-not-detached", LOSSES, "feat_k.detach().float()", "feat_k.float()", T_NCE),
    Mutant("losses:nce-negatives-from-batch-ignored", LOSSES, "        groups = 1\n", "        groups = batch_size or 1\n", T_NCE),
    Mutant("losses:nt-xent-no-normalise", LOSSES, "z = F.normalize(torch.cat([z_a, z_b]).float(), dim=1)",
           "z = torch.cat([z_a, z_b]).float()", T_NTX),
    Mutant("losses:nt-xent-keeps-self", LOSSES, "keep[ar, rows] = False  # self-similarity removed",
           "keep[ar, (rows + 1) % (2 * n)] = False  # self-similarity removed", T_NTX),
    Mutant("losses:lsgan-target-half", LOSSES, "return F.mse_loss(pred, torch.full_like(pred, 1.0 if target_is_real else 0.0))",
           "return F.mse_loss(pred, torch.full_like(pred, 1.0 if target_is_real else -1.0))", T_GAN),
    Mutant("losses:nonsaturating-sign", LOSSES, "return F.softplus(-pred).mean() if target_is_real else F.softplus(pred).mean()",
           "return F.softplus(pred).mean() if target_is_real else F.softplus(-pred).mean()", T_GAN),
    Mutant("losses:identity-l2", LOSSES, "return F.l1_loss(idt_b.float(), real_b.float()) * weight",
           "return F.mse_loss(idt_b.float(), real_b.float()) * weight", T_SINCUT),
    # ------------------------------------------------------------------ objectives
    Mutant("cut:d-loss-not-halved", CUT, "return (loss_fake + loss_real) * 0.5, {", "return (loss_fake + loss_real), {", T_STEP),
    Mutant("cut:fake-not-detached-for-d", CUT, "gan_loss(self.net_d(fake_b.detach()), False, self.config.gan_mode)",
           "gan_loss(self.net_d(fake_b), False, self.config.gan_mode)", T_STEP),
    Mutant("cut:queries-not-flipped-back", CUT, "feat_q = [torch.flip(f, [3]) for f in feat_q]", "feat_q = list(feat_q)", T_STEP),
    Mutant("cut:nce-not-averaged-over-layers", CUT, "return sum(terms[1:], terms[0]) / len(self.generator.nce_layers)",
           "return sum(terms[1:], terms[0])", T_STEP),
    Mutant("cut:nce-idt-not-halved", CUT, 'loss_nce = (terms["NCE"] + terms["NCE_Y"]) * 0.5', 'loss_nce = terms["NCE"] + terms["NCE_Y"]',
           T_STEP),
    Mutant("cut:d-not-frozen-for-g", CUT, "        set_requires_grad(self.discriminator, False)\n        opt_g.zero_grad",
           "        set_requires_grad(self.discriminator, True)\n        opt_g.zero_grad",
           ("tests/training/test_train.py", "-k", "frozen_d")),
    Mutant("cut:g-and-f-adam-betas", CUT, "lr=lr, betas=betas)\n    opt_d", "lr=lr, betas=(0.9, 0.999))\n    opt_d", T_STEP3),
    Mutant("cut:keys-from-translation", CUT, "keys_a = [f[:n] for f in out[\"feats\"]] if reuse else None",
           "keys_a = [f[n:] for f in out[\"feats\"]] if reuse else None", T_STEP),
    Mutant("sincut:r1-not-halved", SINCUT, "return grad.float().pow(2).flatten(1).sum(1).mean() * (0.5 * weight)",
           "return grad.float().pow(2).flatten(1).sum(1).mean() * weight", T_SINCUT),
    Mutant("simclr:anchors-are-all-rows", SIMCLR, "loss = nt_xent_loss_for_anchors(z_a, z_b, anchors, temperature)",
           "loss = nt_xent_loss_for_anchors(z_a, z_b, slice(None), temperature)",
           ("tests/objectives/test_simclr.py", "-k", "two_processes")),
    # ------------------------------------------------------------------ tiling
    Mutant("tiling:window-not-raised-cosine", INFER,
           "w[:before] = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(before, dtype=torch.float64) + 0.5) / before)",
           "w[:before] = (torch.arange(before, dtype=torch.float64) + 0.5) / before * 0.9", T_TILE_FAST),
    Mutant("tiling:after-ramp-not-flipped", INFER, "w[size - after :] = w[size - after :] * ramp.flip(0)",
           "w[size - after :] = w[size - after :] * ramp", T_TILE_FAST),
    Mutant("tiling:last-tile-not-moved-back", INFER, "starts = [*range(0, n - tile, tile - overlap), n - tile]",
           "starts = [*range(0, n - tile, tile - overlap), n - tile + 4]", T_TILE_FAST),
    Mutant("tiling:no-margin", INFER, "iy0, iy1 = max(0, y0 - margin), min(h, y0 + th + margin)",
           "iy0, iy1 = max(0, y0), min(h, y0 + th)", T_TILE_FAST),
    Mutant("tiling:unpooled-crop-stats", INFER, "self.dims = (0, 2, 3) if pool else (2, 3)", "self.dims = (2, 3)", T_TILE_FAST),
    Mutant("tiling:unbiased-variance", INFER, "keepdim=True, correction=0)", "keepdim=True, correction=1)", T_TILE_FAST),
    Mutant("tiling:core-shifted", INFER, "core = y[..., y0 - iy0 : y0 - iy0 + th, x0 - ix0 : x0 - ix0 + tw]",
           "core = y[..., y0 - iy0 : y0 - iy0 + th, x0 - ix0 : x0 - ix0 + tw].roll(4, -1)", T_TILE_FAST),
    Mutant("tiling:pad-to-multiple-of-2", INFER, "return max(MIN_SIDE, -(-n // MULTIPLE) * MULTIPLE)",
           "return max(MIN_SIDE, -(-n // 2) * 2)", T_TILE_FAST),
    Mutant("tiling:stats-crop-off-grid", INFER, "return [min(max(0, int(v) // MULTIPLE * MULTIPLE), (length - side) // MULTIPLE * MULTIPLE)",
           "return [min(max(0, int(v)), (length - side))", T_TILE_FAST),
    # ------------------------------------------------------------------ checkpoints and resume
    Mutant("checkpoints:marker-before-rename-missing", CKPT, "if m and p.is_dir() and (p / COMPLETE_MARKER).is_file():",
           "if m and p.is_dir():", ("tests/training/test_checkpoint_order.py",)),
    Mutant("checkpoints:prune-keeps-oldest", CKPT, "for old in self.complete()[: -self.keep]:", "for old in self.complete()[self.keep :]:",
           T_CKPT),
    Mutant("checkpoints:order-by-name", CKPT, "return [p for *_, p in sorted(found)]", "return sorted(p for *_, p in found)",
           ("tests/training/test_checkpoint_order.py",)),
    Mutant("resume:position-not-restored", RUNTIME, "self.state.update({k: saved[k] for k in self.state if k in saved})",
           'self.state.update({k: saved[k] for k in self.state if k in saved and k != "batch_in_epoch"})', T_RESUME),
    Mutant("resume:epoch-counter-reset", RUNTIME, 'self.state["epoch"], self.state["batch_in_epoch"] = self.state["epoch"] + 1, 0',
           'self.state["epoch"], self.state["batch_in_epoch"] = self.state["epoch"] + 1, self.state["batch_in_epoch"]',
           T_RESUME),
    Mutant("resume:no-final-checkpoint", RUNTIME, 'if cfg.checkpoint_every and self.last_saved != state["step"] and state["step"] > 0:',
           'if False:', ("tests/training/test_checkpoint_order.py", "-k", "off_the_schedule")),
    Mutant("resume:rng-reseeded", RUNTIME, "acc.load_state(str(path))  # weights, optimisers, schedulers, scaler, RNG",
           "acc.load_state(str(path)); torch.manual_seed(0)  # weights, optimisers, schedulers, scaler, RNG", T_RESUME),
]
