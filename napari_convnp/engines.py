"""Engines that run the network's convolutions (`ConvCNP.unet`, most of a tile's time) on CPUs, in place of
PyTorch. The rest of a tile (SetConv, harmonic and biharmonic solvers, reference fills, the blends) stays in torch.

The UNet is exported to ONNX in its plain-layer form (conv, GELU, nearest upsampling: the fused oneDNN paths of
`cpu_kernels` are eager-only), one graph per band count and feature count, on first use (seconds), and kept in a
cache folder keyed by the weights, so later processes load it. "openvino" runs it with OpenVINO's CPU plugin, in
the fill's precision (bfloat16: 1.5x faster than PyTorch's on an AVX-512 BF16 CPU; float32 outputs within 1e-4 of
PyTorch's). ONNX Runtime was measured too and dropped (no faster than PyTorch in float32, no bfloat16 on CPUs):
`benchmarks/profile.md`. Needs the optional extra: `pip install 'napari-convnp[engine]'`.
"""
from __future__ import annotations

import copy
import hashlib
import os
import warnings
from pathlib import Path

from .errors import FillError

ENGINES = ("pytorch", "openvino")
EXTRA = "pip install 'napari-convnp[engine]'"
SMALLEST_SIDE = 64  # the exported graph's example tile (its batch, height and width stay free)


def check_engine(engine: str, device: str | None = None, adapt_steps=0) -> None:
    """FillError for an engine that cannot run: unknown, not on the CPU, with test-time adaptation (which
    fine-tunes the weights in PyTorch), or its package missing."""
    if engine not in ENGINES:
        raise FillError(f"unknown engine '{engine}': use {' or '.join(ENGINES)}")
    if engine == "pytorch":
        return
    if device is not None and not device.startswith("cpu"):
        raise FillError(f"engine '{engine}' runs on the CPU; use it with device 'cpu' (not '{device}')")
    if adapt_steps:
        raise FillError(f"engine '{engine}' runs fixed weights; test-time adaptation fine-tunes them in PyTorch: "
                        "use engine 'pytorch' with it")
    try:
        import onnx  # noqa: F401 - the exporter needs it
        import openvino  # noqa: F401
    except ImportError as err:
        raise FillError(f"engine '{engine}' needs the package '{err.name}': {EXTRA}") from None


def with_engine(model, engine: str, precision: str = "float32"):
    """The model (the same weights, not copied) with its UNet run by `engine` in `precision`; the model itself
    for PyTorch."""
    if engine == "pytorch":
        return model
    check_engine(engine)
    run = copy.copy(model)
    run.unet = OpenVinoUNet(model, precision)
    return run


def cache_folder() -> Path:
    """Where exported graphs are kept: $NAPARI_CONVNP_CACHE, else the user's cache folder."""
    if os.environ.get("NAPARI_CONVNP_CACHE"):
        return Path(os.environ["NAPARI_CONVNP_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "napari-convnp"


class ExportedUNet:
    """`model.unet` as an ONNX graph in the cache folder; subclasses run it: (feature parts, band count) → the
    head's raw outputs, float32."""

    def __init__(self, model):
        self.model = model
        self.runners = {}  # (band count, feature channels) → a compiled graph

    def __call__(self, parts, n_bands: int):
        import torch

        feats = torch.cat(parts, 1).float().contiguous()
        parts.clear()
        key = (n_bands, feats.shape[1])
        if key not in self.runners:
            path = self.exported(*key)
            try:
                self.runners[key] = self.compile(path)
            except Exception as err:  # a damaged cache file, an engine too old for the graph
                raise FillError(f"{path} cannot be loaded ({type(err).__name__}); delete it, or update the extra: "
                                f"{EXTRA}") from None
        return torch.from_numpy(self.run(self.runners[key], feats.numpy()))

    def exported(self, n_bands: int, channels: int) -> Path:
        """The graph for this band count and feature count, exported once into the cache folder."""
        import torch

        digest = hashlib.sha256(f"{torch.__version__} {n_bands} {channels}".encode())
        for tensor in self.model.state_dict().values():
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        path = cache_folder() / f"unet-{digest.hexdigest()[:16]}.onnx"
        if path.exists():
            return path
        part = path.with_name(f"{path.stem}.{os.getpid()}.part")  # renamed once whole: others may read the folder
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            example = torch.zeros(n_bands, channels, SMALLEST_SIDE, SMALLEST_SIDE)
            free = {0: "bands of tiles", 2: "height", 3: "width"}  # scenes × bands: calibration runs batches
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer's notes on Python ints and the exporter's future
                torch.onnx.export(_UNetGraph(self.model, n_bands), (example,), str(part), input_names=["feats"],
                                  output_names=["raw"], dynamic_axes={"feats": free, "raw": free}, opset_version=17,
                                  dynamo=False)
            os.replace(part, path)
        except Exception as err:
            part.unlink(missing_ok=True)
            reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            raise FillError(f"the network could not be exported to ONNX into {path.parent} ({reason}); use engine "
                            f"'pytorch', or update the extra: {EXTRA}") from None
        return path


class OpenVinoUNet(ExportedUNet):
    """The UNet on OpenVINO's CPU plugin, in float32 or bfloat16 (its inference precision hint)."""

    def __init__(self, model, precision: str = "float32"):
        super().__init__(model)
        self.hint = {"float32": "f32", "bfloat16": "bf16"}[precision]

    def compile(self, path: Path):
        import openvino

        return openvino.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": self.hint})

    def run(self, compiled, feats):
        return compiled(feats)[0]


def _UNetGraph(model, n_bands: int):
    """The UNet as a module of one input (the features), for the exporter."""
    import torch

    class UNetGraph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, feats):
            return self.model.unet([feats], n_bands)

    return UNetGraph().eval()
