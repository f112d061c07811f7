"""An anisotropic 3D U-Net: planar (1, 3, 3) convolutions and xy-only pooling while z is coarse.

Per level, an axis gets a 3-wide kernel and is pooled only while its voxels are less than
twice as long as the finest axis (the rule nnU-Net uses), so 10 x 10 x 20 nm data starts with
2D convolutions and (2, 2, 1) pooling and becomes fully 3D once xy has caught up with z.
Tensors are (N, C, Z, Y, X) inside this module; the spec and everything outside speak x, y, z.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass(frozen=True)
class UNetSpec:
    """Everything that fixes the network's shape (stored in the model file)."""

    in_channels: int = 1
    out_channels: int = 1
    width: int = 16  # feature channels at full resolution; doubled per level
    depth: int = 3  # resolution levels (depth - 1 poolings)
    voxel_size_nm: tuple[float, float, float] = (10.0, 10.0, 20.0)
    max_width: int = 128
    kernels: list = field(default_factory=list)  # per level, (kx, ky, kz); derived when empty
    pools: list = field(default_factory=list)  # per pooling, (px, py, pz); derived when empty

    def __post_init__(self):
        if self.depth < 1 or self.width < 1 or self.in_channels < 1 or self.out_channels < 1:
            raise ValueError(f"depth, width and channel counts must be >= 1: {self}")
        if not self.kernels or not self.pools:
            kernels, pools = anisotropic_layout(self.voxel_size_nm, self.depth)
            object.__setattr__(self, "kernels", kernels)
            object.__setattr__(self, "pools", pools)
        object.__setattr__(self, "voxel_size_nm", tuple(float(v) for v in self.voxel_size_nm))
        object.__setattr__(self, "kernels", [tuple(int(k) for k in ks) for ks in self.kernels])
        object.__setattr__(self, "pools", [tuple(int(p) for p in ps) for ps in self.pools])

    @property
    def divisor(self) -> tuple[int, int, int]:
        """Input sizes (x, y, z) must be multiples of this (the product of the poolings)."""
        return tuple(int(v) for v in np.prod(np.asarray(self.pools, dtype=int).reshape(-1, 3), axis=0)) if self.pools else (1, 1, 1)

    def level_width(self, level: int) -> int:
        return min(self.width * 2 ** level, self.max_width)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["voxel_size_nm"] = list(self.voxel_size_nm)
        d["kernels"] = [list(k) for k in self.kernels]
        d["pools"] = [list(p) for p in self.pools]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "UNetSpec":
        return cls(**{k: (tuple(v) if k == "voxel_size_nm" else v) for k, v in d.items()})


def anisotropic_layout(voxel_size_nm, depth: int) -> tuple[list, list]:
    """Kernel sizes per level and pooling factors per pooling step, (x, y, z) each.

    An axis is convolved with width 3 and pooled by 2 while its voxel side is below twice the
    finest side at that level; otherwise it keeps kernel 1 and is not pooled.
    """
    size = np.asarray(voxel_size_nm, dtype=float)
    kernels, pools = [], []
    for level in range(depth):
        fine = size < 2 * size.min()
        kernels.append(tuple(int(k) for k in np.where(fine, 3, 1)))
        if level < depth - 1:
            pool = np.where(fine, 2, 1)
            pools.append(tuple(int(p) for p in pool))
            size = size * pool
    return kernels, pools


def _zyx(v) -> tuple[int, int, int]:
    """(x, y, z) → (z, y, x), the order of torch's last three dimensions here."""
    return (int(v[2]), int(v[1]), int(v[0]))


def build_unet(spec: UNetSpec):
    """The torch module for `spec`: input (N, in_channels, Z, Y, X) float32 → logits (N, out_channels, Z, Y, X)."""
    import torch
    from torch import nn

    def block(c_in: int, c_out: int, kernel_xyz) -> nn.Sequential:
        k = _zyx(kernel_xyz)
        pad = tuple(s // 2 for s in k)
        return nn.Sequential(
            nn.Conv3d(c_in, c_out, k, padding=pad, bias=False), nn.BatchNorm3d(c_out), nn.ReLU(inplace=True),
            nn.Conv3d(c_out, c_out, k, padding=pad, bias=False), nn.BatchNorm3d(c_out), nn.ReLU(inplace=True),
        )

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            w = [spec.level_width(i) for i in range(spec.depth)]
            self.down = nn.ModuleList([block(spec.in_channels if i == 0 else w[i - 1], w[i], spec.kernels[i]) for i in range(spec.depth)])
            self.pool = nn.ModuleList([nn.MaxPool3d(_zyx(p)) for p in spec.pools])
            self.up = nn.ModuleList([nn.ConvTranspose3d(w[i + 1], w[i], _zyx(spec.pools[i]), stride=_zyx(spec.pools[i])) for i in range(spec.depth - 1)])
            self.merge = nn.ModuleList([block(2 * w[i], w[i], spec.kernels[i]) for i in range(spec.depth - 1)])
            self.head = nn.Conv3d(w[0], spec.out_channels, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            skips = []
            for i, down in enumerate(self.down):
                x = down(x)
                if i < len(self.pool):
                    skips.append(x)
                    x = self.pool[i](x)
            for i in reversed(range(len(self.up))):
                x = self.merge[i](torch.cat([skips[i], self.up[i](x)], dim=1))
            return self.head(x)

    return UNet()


def count_parameters(module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def flops_per_voxel(spec: UNetSpec) -> float:
    """Multiply-adds x 2 per output voxel of one forward pass (convolutions only; norms and pools are minor)."""
    total = 0.0
    scale = 1.0  # voxels at this level per full-resolution voxel
    widths = [spec.level_width(i) for i in range(spec.depth)]
    for i in range(spec.depth):
        k = int(np.prod(spec.kernels[i]))
        c_in = spec.in_channels if i == 0 else widths[i - 1]
        total += scale * 2 * k * (c_in * widths[i] + widths[i] * widths[i])  # encoder block
        if i < spec.depth - 1:
            total += scale * 2 * k * (2 * widths[i] * widths[i] + widths[i] * widths[i])  # decoder block
            total += scale * 2 * widths[i + 1] * widths[i]  # transposed conv: one tap per output voxel
            scale /= float(np.prod(spec.pools[i]))
    total += 2 * widths[0] * spec.out_channels
    return total
