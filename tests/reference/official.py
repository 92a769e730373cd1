"""An independent re-implementation of the official CUT networks and losses, for equality tests.

Written from ``models/networks.py`` and ``models/patchnce.py`` of
https://github.com/taesungp/contrastive-unpaired-translation (BSD licence), keeping what decides
the numbers and the state-dict layout: module order inside ``model`` (so the keys and indices),
padding types and sizes, the blur kernels, ``encode_only`` early exit, the lazily built MLPs of
``PatchSampleF``, ``Normalize(2)`` with eps 1e-7 added to the norm, and ``PatchNCELoss`` with the
-10 diagonal. Option objects are replaced by plain arguments; nothing here imports ``cut_hf``, so a
mistake in the package cannot hide in its own reference.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def get_filter(filt_size: int = 3) -> torch.Tensor:
    """Normalised outer product of a binomial row (Pascal's triangle), as ``get_filter``."""
    rows = {1: [1.0], 2: [1.0, 1.0], 3: [1.0, 2.0, 1.0], 4: [1.0, 3.0, 3.0, 1.0], 5: [1.0, 4.0, 6.0, 4.0, 1.0],
            6: [1.0, 5.0, 10.0, 10.0, 5.0, 1.0], 7: [1.0, 6.0, 15.0, 20.0, 15.0, 6.0, 1.0]}
    a = np.array(rows[filt_size])
    filt = torch.Tensor(a[:, None] * a[None, :])
    return filt / torch.sum(filt)


def get_pad_layer(pad_type: str) -> type[nn.Module]:
    return {"refl": nn.ReflectionPad2d, "reflect": nn.ReflectionPad2d, "repl": nn.ReplicationPad2d,
            "replicate": nn.ReplicationPad2d, "zero": nn.ZeroPad2d}[pad_type]


class Downsample(nn.Module):
    def __init__(self, channels, pad_type="reflect", filt_size=3, stride=2, pad_off=0):
        super().__init__()
        self.filt_size, self.pad_off, self.stride, self.channels = filt_size, pad_off, stride, channels
        lo, hi = int(1.0 * (filt_size - 1) / 2), int(np.ceil(1.0 * (filt_size - 1) / 2))
        self.pad_sizes = [p + pad_off for p in (lo, hi, lo, hi)]
        self.register_buffer("filt", get_filter(filt_size)[None, None, :, :].repeat((channels, 1, 1, 1)))
        self.pad = get_pad_layer(pad_type)(self.pad_sizes)

    def forward(self, inp):
        if self.filt_size == 1:
            src = inp if self.pad_off == 0 else self.pad(inp)
            return src[:, :, :: self.stride, :: self.stride]
        return F.conv2d(self.pad(inp), self.filt, stride=self.stride, groups=inp.shape[1])


class Upsample(nn.Module):
    def __init__(self, channels, pad_type="repl", filt_size=4, stride=2):
        super().__init__()
        self.filt_size, self.stride, self.channels = filt_size, stride, channels
        self.filt_odd = np.mod(filt_size, 2) == 1
        self.pad_size = int((filt_size - 1) / 2)
        filt = get_filter(filt_size) * (stride**2)
        self.register_buffer("filt", filt[None, None, :, :].repeat((channels, 1, 1, 1)))
        self.pad = get_pad_layer(pad_type)([1, 1, 1, 1])

    def forward(self, inp):
        out = F.conv_transpose2d(self.pad(inp), self.filt, stride=self.stride, padding=1 + self.pad_size,
                                 groups=inp.shape[1])[:, :, 1:, 1:]
        return out if self.filt_odd else out[:, :, :-1, :-1]


class Identity(nn.Module):
    def forward(self, x):
        return x


def get_norm_layer(norm_type: str = "instance"):
    if norm_type == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    if norm_type == "instance":
        return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    if norm_type == "none":
        return lambda channels: Identity()
    raise NotImplementedError(norm_type)


def _uses_bias(norm_layer) -> bool:
    # The original decides by the norm class: only instance norm gives the convolutions a bias.
    if isinstance(norm_layer, functools.partial):
        return norm_layer.func == nn.InstanceNorm2d
    return norm_layer == nn.InstanceNorm2d


class ResnetBlock(nn.Module):
    def __init__(self, dim, padding_type, norm_layer, use_dropout, use_bias):
        super().__init__()
        block: list[nn.Module] = []
        for second in (False, True):
            p = 0
            if padding_type == "reflect":
                block.append(nn.ReflectionPad2d(1))
            elif padding_type == "replicate":
                block.append(nn.ReplicationPad2d(1))
            else:
                p = 1
            block += [nn.Conv2d(dim, dim, kernel_size=3, padding=p, bias=use_bias), norm_layer(dim)]
            if not second:
                block.append(nn.ReLU(True))
                if use_dropout:
                    block.append(nn.Dropout(0.5))
        self.conv_block = nn.Sequential(*block)

    def forward(self, x):
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    def __init__(self, input_nc, output_nc, ngf=64, norm_layer=nn.BatchNorm2d, use_dropout=False, n_blocks=6,
                 padding_type="reflect", no_antialias=False, no_antialias_up=False):
        assert n_blocks >= 0
        super().__init__()
        use_bias = _uses_bias(norm_layer)
        model: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0, bias=use_bias),
                                  norm_layer(ngf), nn.ReLU(True)]
        n_down = 2
        for i in range(n_down):
            mult = 2**i
            if no_antialias:
                model += [nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1, bias=use_bias),
                          norm_layer(ngf * mult * 2), nn.ReLU(True)]
            else:
                model += [nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=1, padding=1, bias=use_bias),
                          norm_layer(ngf * mult * 2), nn.ReLU(True), Downsample(ngf * mult * 2)]
        mult = 2**n_down
        model += [ResnetBlock(ngf * mult, padding_type, norm_layer, use_dropout, use_bias) for _ in range(n_blocks)]
        for i in range(n_down):
            mult = 2 ** (n_down - i)
            out = int(ngf * mult / 2)
            if no_antialias_up:
                model += [nn.ConvTranspose2d(ngf * mult, out, kernel_size=3, stride=2, padding=1, output_padding=1,
                                             bias=use_bias), norm_layer(out), nn.ReLU(True)]
            else:
                model += [Upsample(ngf * mult), nn.Conv2d(ngf * mult, out, kernel_size=3, stride=1, padding=1,
                                                          bias=use_bias), norm_layer(out), nn.ReLU(True)]
        model += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0), nn.Tanh()]
        self.model = nn.Sequential(*model)

    def forward(self, input, layers=(), encode_only=False):
        layers = list(layers)
        if -1 in layers:
            layers.append(len(self.model))
        if not layers:
            return self.model(input)
        feat, feats = input, []
        for layer_id, layer in enumerate(self.model):
            feat = layer(feat)
            if layer_id in layers:
                feats.append(feat)
            if layer_id == layers[-1] and encode_only:
                return feats  # stops here: the decoder is not run
        return feat, feats


class NLayerDiscriminator(nn.Module):
    def __init__(self, input_nc, ndf=64, n_layers=3, norm_layer=nn.BatchNorm2d, no_antialias=False):
        super().__init__()
        use_bias = _uses_bias(norm_layer)
        kw, padw = 4, 1
        if no_antialias:
            seq: list[nn.Module] = [nn.Conv2d(input_nc, ndf, kernel_size=kw, stride=2, padding=padw), nn.LeakyReLU(0.2, True)]
        else:
            seq = [nn.Conv2d(input_nc, ndf, kernel_size=kw, stride=1, padding=padw), nn.LeakyReLU(0.2, True),
                   Downsample(ndf)]
        nf_mult = 1
        for n in range(1, n_layers):
            nf_mult_prev, nf_mult = nf_mult, min(2**n, 8)
            stride = 2 if no_antialias else 1
            seq += [nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kernel_size=kw, stride=stride, padding=padw,
                              bias=use_bias), norm_layer(ndf * nf_mult), nn.LeakyReLU(0.2, True)]
            if not no_antialias:
                seq.append(Downsample(ndf * nf_mult))
        nf_mult_prev, nf_mult = nf_mult, min(2**n_layers, 8)
        seq += [nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kernel_size=kw, stride=1, padding=padw, bias=use_bias),
                norm_layer(ndf * nf_mult), nn.LeakyReLU(0.2, True),
                nn.Conv2d(ndf * nf_mult, 1, kernel_size=kw, stride=1, padding=padw)]
        self.model = nn.Sequential(*seq)

    def forward(self, input):
        return self.model(input)


class Normalize(nn.Module):
    def __init__(self, power=2):
        super().__init__()
        self.power = power

    def forward(self, x):
        norm = x.pow(self.power).sum(1, keepdim=True).pow(1.0 / self.power)
        return x.div(norm + 1e-7)


def init_weights(net: nn.Module, init_type: str = "xavier", init_gain: float = 0.02) -> None:
    def init_func(m):
        name = m.__class__.__name__
        if hasattr(m, "weight") and (name.find("Conv") != -1 or name.find("Linear") != -1):
            if init_type == "normal":
                nn.init.normal_(m.weight.data, 0.0, init_gain)
            elif init_type == "xavier":
                nn.init.xavier_normal_(m.weight.data, gain=init_gain)
            else:
                raise NotImplementedError(init_type)
            if getattr(m, "bias", None) is not None:
                nn.init.constant_(m.bias.data, 0.0)
        elif name.find("BatchNorm2d") != -1:
            nn.init.normal_(m.weight.data, 1.0, init_gain)
            nn.init.constant_(m.bias.data, 0.0)

    net.apply(init_func)


class PatchSampleF(nn.Module):
    """The official netF: MLPs are created on the first forward, from the feature shapes."""

    def __init__(self, use_mlp=False, init_type="xavier", init_gain=0.02, nc=256):
        super().__init__()
        self.l2norm = Normalize(2)
        self.use_mlp, self.nc, self.mlp_init = use_mlp, nc, False
        self.init_type, self.init_gain = init_type, init_gain

    def create_mlp(self, feats):
        for mlp_id, feat in enumerate(feats):
            mlp = nn.Sequential(nn.Linear(feat.shape[1], self.nc), nn.ReLU(), nn.Linear(self.nc, self.nc))
            setattr(self, "mlp_%d" % mlp_id, mlp.to(feat.device))  # the original calls .cuda()
        init_weights(self, self.init_type, self.init_gain)
        self.mlp_init = True

    def forward(self, feats, num_patches=64, patch_ids=None):
        return_ids, return_feats = [], []
        if self.use_mlp and not self.mlp_init:
            self.create_mlp(feats)
        for feat_id, feat in enumerate(feats):
            B, H, W = feat.shape[0], feat.shape[2], feat.shape[3]
            feat_reshape = feat.permute(0, 2, 3, 1).flatten(1, 2)
            if num_patches > 0:
                if patch_ids is not None:
                    patch_id = patch_ids[feat_id]
                else:
                    patch_id = torch.randperm(feat_reshape.shape[1], device=feats[0].device)
                    patch_id = patch_id[: int(min(num_patches, patch_id.shape[0]))]
                x_sample = feat_reshape[:, patch_id, :].flatten(0, 1)
            else:
                x_sample, patch_id = feat_reshape, []
            if self.use_mlp:
                x_sample = getattr(self, "mlp_%d" % feat_id)(x_sample)
            return_ids.append(patch_id)
            x_sample = self.l2norm(x_sample)
            if num_patches == 0:
                x_sample = x_sample.permute(0, 2, 1).reshape([B, x_sample.shape[-1], H, W])
            return_feats.append(x_sample)
        return return_feats, return_ids


class PatchNCELoss(nn.Module):
    """Per-patch PatchNCE loss (reduction 'none'); ``opt`` needs batch_size, nce_T and
    nce_includes_all_negatives_from_minibatch."""

    def __init__(self, opt):
        super().__init__()
        self.opt = opt
        self.cross_entropy_loss = nn.CrossEntropyLoss(reduction="none")

    def forward(self, feat_q, feat_k):
        num_patches, dim = feat_q.shape[0], feat_q.shape[1]
        feat_k = feat_k.detach()
        l_pos = torch.bmm(feat_q.view(num_patches, 1, -1), feat_k.view(num_patches, -1, 1)).view(num_patches, 1)
        batch_dim_for_bmm = 1 if self.opt.nce_includes_all_negatives_from_minibatch else self.opt.batch_size
        feat_q = feat_q.view(batch_dim_for_bmm, -1, dim)
        feat_k = feat_k.view(batch_dim_for_bmm, -1, dim)
        npatches = feat_q.size(1)
        l_neg_curbatch = torch.bmm(feat_q, feat_k.transpose(2, 1))
        diagonal = torch.eye(npatches, device=feat_q.device, dtype=torch.bool)[None, :, :]
        l_neg_curbatch.masked_fill_(diagonal, -10.0)
        l_neg = l_neg_curbatch.view(-1, npatches)
        out = torch.cat((l_pos, l_neg), dim=1) / self.opt.nce_T
        return self.cross_entropy_loss(out, torch.zeros(out.size(0), dtype=torch.long, device=feat_q.device))


def patchnce_opt(batch_size: int = 1, nce_T: float = 0.07, all_negatives: bool = False) -> SimpleNamespace:
    """The option fields ``PatchNCELoss`` reads."""
    return SimpleNamespace(batch_size=batch_size, nce_T=nce_T, nce_includes_all_negatives_from_minibatch=all_negatives)


class GANLoss(nn.Module):
    def __init__(self, gan_mode, target_real_label=1.0, target_fake_label=0.0):
        super().__init__()
        self.register_buffer("real_label", torch.tensor(target_real_label))
        self.register_buffer("fake_label", torch.tensor(target_fake_label))
        self.gan_mode = gan_mode
        self.loss = {"lsgan": nn.MSELoss(), "vanilla": nn.BCEWithLogitsLoss()}.get(gan_mode)

    def __call__(self, prediction, target_is_real):
        bs = prediction.size(0)
        if self.gan_mode in ("lsgan", "vanilla"):
            target = (self.real_label if target_is_real else self.fake_label).expand_as(prediction)
            return self.loss(prediction, target)
        if self.gan_mode == "nonsaturating":
            sign = -1.0 if target_is_real else 1.0
            return F.softplus(sign * prediction).view(bs, -1).mean(dim=1)  # per sample; CUT takes .mean()
        raise NotImplementedError(self.gan_mode)


def official_generator(input_nc=3, output_nc=3, ngf=64, n_blocks=9, norm="instance", antialias=True,
                       antialias_up=True, dropout=False, seed=0) -> ResnetGenerator:
    """``define_G`` with CUT's options (xavier init, gain 0.02), from our argument names."""
    torch.manual_seed(seed)
    net = ResnetGenerator(input_nc, output_nc, ngf, norm_layer=get_norm_layer(norm), use_dropout=dropout,
                          n_blocks=n_blocks, no_antialias=not antialias, no_antialias_up=not antialias_up)
    init_weights(net)
    return net


def official_discriminator(input_nc=3, ndf=64, n_layers=3, norm="instance", antialias=True, seed=0):
    """``define_D('basic' / 'n_layers')`` with CUT's options."""
    torch.manual_seed(seed)
    net = NLayerDiscriminator(input_nc, ndf, n_layers, norm_layer=get_norm_layer(norm), no_antialias=not antialias)
    init_weights(net)
    return net


# ----------------------------------------------------------------------------- the training step
# The official ``CUTModel`` (models/cut_model.py) re-implemented with plain arguments: its --CUT_mode
# presets, ``data_dependent_initialize`` and ``optimize_parameters`` in the same order of forward
# passes, backward passes and optimiser steps.

CUT_MODE_PRESETS = {
    "cut": dict(nce_idt=True, lambda_NCE=1.0, flip_equivariance=False),
    "fastcut": dict(nce_idt=False, lambda_NCE=10.0, flip_equivariance=True),
}


def cut_options(mode: str = "cut", **overrides) -> SimpleNamespace:
    """The options ``CUTModel`` reads, with the official defaults and the ``--CUT_mode`` preset."""
    opt = SimpleNamespace(lambda_GAN=1.0, nce_layers=(0, 4, 8, 12, 16), num_patches=256, nce_T=0.07,
                          nce_includes_all_negatives_from_minibatch=False, gan_mode="lsgan", batch_size=1,
                          lr=2e-4, beta1=0.5, beta2=0.999, **CUT_MODE_PRESETS[mode.lower()])
    for key, value in overrides.items():
        if not hasattr(opt, key):
            raise TypeError(f"unknown option {key!r}")
        setattr(opt, key, value)
    return opt


def set_requires_grad(net: nn.Module, flag: bool) -> None:
    for p in net.parameters():
        p.requires_grad = flag


class OfficialCUTModel:
    """One CUT / FastCUT learner as the official code trains it (netF with MLPs, ``--netF mlp_sample``).

    ``random`` draws the flip-equivariance coin (``np.random.random`` in the original); tests
    replace it to choose the flips. Losses of the last step are kept as ``loss_<name>`` attributes.
    """

    def __init__(self, netG: ResnetGenerator, netD: NLayerDiscriminator, netF: PatchSampleF, opt: SimpleNamespace):
        self.netG, self.netD, self.netF, self.opt = netG, netD, netF, opt
        self.nce_layers = list(opt.nce_layers)
        self.random = np.random.random
        self.criterionNCE = [PatchNCELoss(opt) for _ in self.nce_layers]
        self.optimizer_G = torch.optim.Adam(netG.parameters(), lr=opt.lr, betas=(opt.beta1, opt.beta2))
        self.optimizer_D = torch.optim.Adam(netD.parameters(), lr=opt.lr, betas=(opt.beta1, opt.beta2))
        self.optimizer_F = None  # made once netF has its MLPs (data_dependent_initialize)

    def criterion_gan(self, prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        return GANLoss(self.opt.gan_mode)(prediction, target_is_real)

    def set_input(self, batch: dict) -> None:
        self.real_A, self.real_B = batch["A"], batch["B"]

    def data_dependent_initialize(self, batch: dict) -> None:
        """A first forward and both backward passes (no step): builds netF's MLPs, then its Adam."""
        self.set_input(batch)
        self.forward()
        self.compute_D_loss().backward()
        self.compute_G_loss().backward()
        if self.opt.lambda_NCE > 0.0:
            self.optimizer_F = torch.optim.Adam(self.netF.parameters(), lr=self.opt.lr,
                                                betas=(self.opt.beta1, self.opt.beta2))

    def forward(self) -> None:
        self.real = torch.cat((self.real_A, self.real_B), dim=0) if self.opt.nce_idt else self.real_A
        self.flipped_for_equivariance = False
        if self.opt.flip_equivariance:
            self.flipped_for_equivariance = self.random() < 0.5
            if self.flipped_for_equivariance:
                self.real = torch.flip(self.real, [3])
        self.fake = self.netG(self.real)
        self.fake_B = self.fake[: self.real_A.size(0)]
        if self.opt.nce_idt:
            self.idt_B = self.fake[self.real_A.size(0):]

    def compute_D_loss(self) -> torch.Tensor:
        self.loss_D_fake = self.criterion_gan(self.netD(self.fake_B.detach()), False).mean()
        self.loss_D_real = self.criterion_gan(self.netD(self.real_B), True).mean()
        self.loss_D = (self.loss_D_fake + self.loss_D_real) * 0.5
        return self.loss_D

    def compute_G_loss(self) -> torch.Tensor:
        self.loss_G_GAN = 0.0
        if self.opt.lambda_GAN > 0.0:
            self.loss_G_GAN = self.criterion_gan(self.netD(self.fake_B), True).mean() * self.opt.lambda_GAN
        self.loss_NCE = 0.0
        if self.opt.lambda_NCE > 0.0:
            self.loss_NCE = self.calculate_NCE_loss(self.real_A, self.fake_B)
        loss_nce_both = self.loss_NCE
        if self.opt.nce_idt and self.opt.lambda_NCE > 0.0:
            self.loss_NCE_Y = self.calculate_NCE_loss(self.real_B, self.idt_B)
            loss_nce_both = (self.loss_NCE + self.loss_NCE_Y) * 0.5
        self.loss_G = self.loss_G_GAN + loss_nce_both
        return self.loss_G

    def calculate_NCE_loss(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        # Queries from the translation (flipped back), keys from a second encoder pass on the source;
        # keys are sampled first, and the queries reuse their patch locations.
        feat_q = self.netG(tgt, self.nce_layers, encode_only=True)
        if self.opt.flip_equivariance and self.flipped_for_equivariance:
            feat_q = [torch.flip(f, [3]) for f in feat_q]
        feat_k = self.netG(src, self.nce_layers, encode_only=True)
        feat_k_pool, sample_ids = self.netF(feat_k, self.opt.num_patches, None)
        feat_q_pool, _ = self.netF(feat_q, self.opt.num_patches, sample_ids)
        total = 0.0
        for f_q, f_k, crit in zip(feat_q_pool, feat_k_pool, self.criterionNCE):
            total += (crit(f_q, f_k) * self.opt.lambda_NCE).mean()
        return total / len(self.nce_layers)

    def optimize_parameters(self) -> None:
        """Forward once; D step on the detached fake; then G and F step against the updated D."""
        self.forward()
        set_requires_grad(self.netD, True)
        self.optimizer_D.zero_grad()
        self.compute_D_loss().backward()
        self.optimizer_D.step()
        set_requires_grad(self.netD, False)
        self.optimizer_G.zero_grad()
        self.optimizer_F.zero_grad()
        self.compute_G_loss().backward()
        self.optimizer_G.step()
        self.optimizer_F.step()

    def current_losses(self) -> dict[str, float]:
        names = ["D_fake", "D_real", "G_GAN", "NCE"] + (["NCE_Y"] if self.opt.nce_idt else [])
        return {name: float(torch.as_tensor(getattr(self, "loss_" + name)).detach()) for name in names}
