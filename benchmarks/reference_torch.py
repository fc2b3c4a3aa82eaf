"""The reference PyTorch FNO layout, for timing the PyTorch code path and testing interop.

Layout (``state_dict`` keys and shapes are what `fno_jax.interop` reads and writes):
``fc0`` Linear(in, width) -> ``depth`` x [``sp_convs.{i}`` spectral conv (``weights1``/``weights2``
``[width, width, m, m, 2]``) + ``ws.{i}`` Conv1d(width, width, 1), exact GELU between layers] ->
``fc1`` Linear(width, fc_dim) -> GELU -> ``fc2`` Linear(fc_dim, out). The module takes and returns
channels-last ``[batch, y, x, channels]``; the Fourier layers work on ``[batch, channel, y, x]``.

torch is imported lazily so that importing this module never requires it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["make_reference_model"]


def make_reference_model(
    width: int,
    modes: int,
    depth: int = 4,
    fc_dim: int = 128,
    in_channels: int = 4,
    out_channels: int = 1,
) -> Any:
    """A ``torch.nn.Module`` with the reference FNO layout (random init, float32, on CPU)."""
    import torch
    from torch import nn

    class SpectralConv2d(nn.Module):
        def __init__(self, channels: int, modes: int) -> None:
            super().__init__()
            self.modes = modes
            scale = 1.0 / (channels * channels)
            shape = (channels, channels, modes, modes, 2)
            self.weights1 = nn.Parameter(scale * torch.rand(shape))
            self.weights2 = nn.Parameter(scale * torch.rand(shape))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            batch, _, ny, nx = x.shape
            m = self.modes
            x_ft = torch.fft.rfft2(x, norm="ortho")
            w1 = torch.view_as_complex(self.weights1)
            w2 = torch.view_as_complex(self.weights2)
            out_ft = torch.zeros(batch, w1.shape[1], ny, nx // 2 + 1, dtype=x_ft.dtype, device=x.device)
            out_ft[:, :, :m, :m] = torch.einsum("bixy,ioxy->boxy", x_ft[:, :, :m, :m], w1)
            out_ft[:, :, -m:, :m] = torch.einsum("bixy,ioxy->boxy", x_ft[:, :, -m:, :m], w2)
            return torch.fft.irfft2(out_ft, s=(ny, nx), norm="ortho")

    class ReferenceFNO(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc0 = nn.Linear(in_channels, width)
            self.sp_convs = nn.ModuleList(SpectralConv2d(width, modes) for _ in range(depth))
            self.ws = nn.ModuleList(nn.Conv1d(width, width, 1) for _ in range(depth))
            self.fc1 = nn.Linear(width, fc_dim)
            self.fc2 = nn.Linear(fc_dim, out_channels)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            batch, ny, nx, _ = x.shape
            x = self.fc0(x).permute(0, 3, 1, 2)  # [batch, width, y, x]
            for i, (spectral, pointwise) in enumerate(zip(self.sp_convs, self.ws)):
                local = pointwise(x.reshape(batch, width, ny * nx)).reshape(batch, width, ny, nx)
                x = spectral(x) + local
                if i < depth - 1:
                    x = nn.functional.gelu(x)
            x = x.permute(0, 2, 3, 1)
            return self.fc2(nn.functional.gelu(self.fc1(x)))

    return ReferenceFNO()
