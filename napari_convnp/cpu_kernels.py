"""CPU fast paths of the network's layers: the same sums as the plain layers, in fewer, cheaper calls. The network's
definition (`model.py`) stays plain; training runs the plain layers (these are for inference only).
"""
from __future__ import annotations

import functools
import sys

import torch
import torch.nn.functional as F
from torch import nn

# CPU flags with which oneDNN runs bfloat16 convolutions in hardware; without them it refuses the fused call or
# emulates it (a bfloat16 convolution ~27x slower than float32 on an AMD EPYC without AVX-512).
NATIVE_BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16", "avx_ne_convert")
_unfused_dtypes = set()  # dtypes oneDNN's fused call turned out not to take in this process (decided per dtype)


@functools.lru_cache(maxsize=1)
def bfloat16_note() -> str | None:
    """None where this CPU runs bfloat16 natively, else why not: a fill asked for bfloat16 then runs in float32."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), None)
    except OSError:
        flags = None
    if flags is None:  # not Linux: oneDNN's own check (AVX-512 BW/VL/DQ at least)
        supported = torch.ops.mkldnn._is_mkldnn_bf16_supported()
        return None if supported else "this CPU has no AVX-512 for bfloat16"
    if any(flag in flags for flag in NATIVE_BFLOAT16_FLAGS):
        return None
    return "this CPU has no native bfloat16 (AVX-512 BF16, AMX or AVX-NE-CONVERT)"


def cpu_precision(precision: str) -> tuple[str, str | None]:
    """The precision a CPU fill runs in, and a one-line note where bfloat16 was asked for but is not native."""
    note = bfloat16_note() if precision == "bfloat16" else None
    if note:
        return "float32", f"--precision bfloat16 runs in float32 here: {note}"
    return precision, None


def conv_gelu(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """GELU(conv(x)). In CPU inference one fused oneDNN call (conv with a GELU post-op): about twice as fast
    as the two, which at full resolution are limited by memory traffic, not arithmetic."""
    if x.dtype not in _unfused_dtypes and x.device.type == "cpu" and not torch.is_grad_enabled() and not exporting():
        try:
            return _fused_conv_gelu(conv, x)
        except (AttributeError, RuntimeError, NotImplementedError):
            _unfused_dtypes.add(x.dtype)  # this dtype only: float32 keeps its fused path
    return F.gelu(conv(x))


def exporting() -> bool:
    """True while `torch.onnx.export` traces the network (`benchmarks/engine.py`): it takes the plain layers. Not
    imported, torch.onnx exports nothing (and importing it would cost a fill ~0.1 s)."""
    return "torch.onnx" in sys.modules and torch.onnx.is_in_onnx_export()


def _fused_conv_gelu(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._convolution_pointwise(x, conv.weight.to(x.dtype), conv.bias.to(x.dtype), conv.padding,
                                                   conv.stride, conv.dilation, conv.groups, "gelu", [], "none")


def run_block(block: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """A `_block` (conv, GELU, conv, GELU) applied through `conv_gelu`."""
    return conv_gelu(block[2], conv_gelu(block[0], x))


# Where the taps of a 3×3 kernel on a nearest ×2 upsampled image fall on the image itself, for even and odd output
# rows: [phase, tap of a 2×2 window at the low resolution, tap of the 3×3 kernel (−1, 0, +1)]. Output row 2i sees
# rows i−1, i, i (window i−1…i); output row 2i+1 sees rows i, i, i+1 (window i…i+1).
_PHASE_TAPS = torch.tensor([[[1., 0, 0], [0, 1, 1]],
                            [[1., 1, 0], [0, 0, 1]]])


def up_block(block: nn.Sequential, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """`run_block(block, cat([nearest ×2 upsampling of x, skip]))` without either full-resolution tensor: the first
    convolution's x part runs at x's resolution as one 2×2 kernel per output phase (the pixel of each 2×2 block),
    added into place onto its skip part. The same sums, 4/9 of that part's arithmetic and less memory traffic."""
    if exporting():  # the in-place phase sums below trace silently wrong: the exported graph takes the plain form
        return run_block(block, torch.cat([F.interpolate(x, scale_factor=2, mode="nearest"), skip], 1))
    conv, cx = block[0], x.shape[1]
    n, _, h, w = x.shape
    taps = _PHASE_TAPS.to(conv.weight)
    phases = torch.einsum("aij,ocjk,blk->oabcil", taps, conv.weight[:, :cx], taps).reshape(-1, cx, 2, 2)
    low = F.conv2d(F.pad(x, (1, 1, 1, 1)), phases).view(n, -1, 2, 2, h + 1, w + 1)
    y = F.conv2d(skip, conv.weight[:, cx:], conv.bias, padding=1)
    pixels = y.view(n, -1, h, 2, w, 2)
    # phase (a, b): output pixels (2i + a, 2j + b), windows starting at low-res (i − 1 + a, j − 1 + b)
    for a in range(2):
        for b in range(2):
            pixels[:, :, :, a, :, b] += low[:, :, a, b, a:a + h, b:b + w]
    return conv_gelu(block[2], F.gelu(y))
