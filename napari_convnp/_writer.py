"""The npe2 writers: an image layer as float32 GeoTIFF, a mask as uint8 GeoTIFF, georeferencing kept; a result of
the widget with its provenance. `offer_first` puts them before napari's own in File › Save Selected Layers."""
from __future__ import annotations

import numpy as np

from . import __version__
from ._layers import RESULT_KEY, result_method
from ._napari import scene_of
from ._reader import PLUGIN
from .errors import SceneError
from .scene import write_bands, write_scene


def write_image(path: str, data, meta: dict) -> list[str]:
    """Save an image layer (a scene, a fill, a variance) as float32 GeoTIFF, georeferencing kept; never over
    any file the layer's scene was read from (every band file of a Landsat folder too). A stack of dates
    (date × band × y × x) is refused: one GeoTIFF holds bands × rows × columns, and would be unreadable.
    A result of the widget records what made it (`provenance`), as the command line's outputs do."""
    if meta.get("multiscale"):  # a streamed result (`_layers.levels`): its full resolution
        data = data[0]
    if np.ndim(data) - bool(meta.get("rgb")) > 3:
        raise SceneError(f"{path}: a layer of shape {tuple(np.shape(data))} (a stack of dates) cannot be one GeoTIFF "
                         "of bands × rows × columns; save single scenes")
    scene = scene_of(data, meta)
    protect = [scene.path] if scene.path else []
    write_scene(scene, path, protect=tuple(protect), metadata=provenance(meta))
    return [path]


def write_labels(path: str, data, meta: dict) -> list[str]:
    """Save a mask (Labels layer, nonzero = fill) as a uint8 GeoTIFF (1 = fill) with the georeferencing of
    the layer's scene, so masks round-trip."""
    mask = (np.asarray(data) != 0).astype(np.uint8)
    scene = scene_of(np.zeros(mask.shape, np.float32), meta)
    names = scene.band_names if mask.ndim == 3 else [f"{scene.name} mask"]
    write_bands(path, mask, like=scene, names=names, keep_roles=(), protect=(scene.path,) if scene.path else (),
                metadata=provenance(meta))
    return [path]


def provenance(meta: dict) -> dict | None:
    """The CONVNP_ items (GDAL metadata) of a layer the widget made: what it is, from which scene, by which method,
    mask and reference, with which version and weights; None for other layers (a scene saved as it is)."""
    from .fileio import weights_id

    info = (meta.get("metadata") or {}).get(RESULT_KEY) or {}
    if not info.get("kind"):
        return None
    label = info.get("label", "")
    method = result_method(label) if label else None
    return {"output": " ".join(filter(None, (label, info["kind"]))), "source": info.get("source") or None,
            "method": method, "version": f"napari-convnp {__version__}",
            "weights": weights_id() if method == "convnp" else None, "mask": info.get("mask") or None,
            "references": info.get("reference") or None}


def offer_first(context=None) -> None:
    """Put this plugin's writers before napari's own, so that File › Save Selected Layers offers (and, without a
    choice, uses) the georeferenced GeoTIFF first: napari's builtin one writes a fill as uint32 without its map
    position. npe2 offers writers of equal fit in the order they were registered (napari's first) and has no
    setting for it, so its index is reordered; with another npe2 the order is left as it is. The plugin's
    `on_activate` (napari.yaml): npe2 calls it, with the plugin's context, when a command of the plugin first runs
    (its reader, a sample, a dock widget)."""
    try:
        from npe2 import PluginManager

        writers = PluginManager.instance()._contrib._writers  # (layer type, min, max, WriterContribution)
    except (ImportError, AttributeError):
        return
    ours = [entry for entry in writers if entry[3].plugin_name == PLUGIN]
    if ours and writers[:len(ours)] != ours:
        writers[:] = ours + [entry for entry in writers if entry[3].plugin_name != PLUGIN]
