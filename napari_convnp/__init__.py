"""napari-convnp: fill the gaps of Landsat 7 scenes with a ConvNP and show its mean and variance.

`from napari_convnp import fill, fill_file, read_scene` works; each is imported when first asked for, so
`import napari_convnp` stays light (no torch, no napari).
"""
__version__ = "0.1.0"

# the public API: name -> the module that defines it
_API = {"fill": "inpaint", "Fill": "inpaint", "fill_file": "fileio", "read_scene": "scene", "write_scene": "scene",
        "fill_many": "batch", "detect_gaps": "masks", "FillOptions": "options", "ConvNPError": "errors",
        "read_stack": "stack", "fill_stack": "stack_fill"}
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from importlib import import_module

        return getattr(import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
