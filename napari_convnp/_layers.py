"""Layers the widget makes and reads: names, colormaps, display limits, and a layer's pixels as bands."""
from __future__ import annotations

import numpy as np

from . import options
from ._napari import (
    COMPOSITE_KEY,
    SCENE_KEY,
    STACK_KEY,
    composite_limits,
    contrast_limits,
    default_composite,
    fit_placement,
    layer_placement,
    rgb_composite,
    scene_of,
)
from .errors import ConvNPError
from .scene import Scene, SceneError, read_scene

# screen pixels a character of a grid-cell label takes per unit of font size (points: 4/3 px at 96 dpi, and some
# margin for wide letters), and the pixels the label stands off the cell's left edge; measured on screenshots
LABEL_CHARACTER_WIDTH, LABEL_MARGIN = 1.3, 10
RESULT_KEY = "napari_convnp_result"  # layer.metadata: {"source", "label", "kind", …} of a result or a mask
OWN_LIMITS_KEY = "napari_convnp_own_limits"  # a result's own contrast limits, before `share_limits`
FROM_FILE_KEY = "napari_convnp_read_from_file"  # the Scene of a layer opened by another reader, read by us
NAME_BUDGET = 24  # characters the layer list shows at its default width (it elides the middle)
NEEDS_REFERENCE = options.NEEDS_REFERENCE
# a streamed result's in-memory levels are halved down to this side: napari shows the coarsest level that is sharp
# enough for the canvas, and a layer's first draw uploads it (a 2048² float32 texture: 0.05-0.1 s on the GUI thread)
COARSEST_SIDE = 1024


class InputError(ConvNPError):
    """Something the user can put right in the widget (no scene, a mask of another size, no method…).

    Raised by the input checks, turned into a notification by `_reports_input_errors`; never a traceback."""


def uses_reference(method: str) -> bool:
    """Whether a method takes another date: the ConvNP optionally, the two-date baselines always."""
    return method in options.USES_REFERENCE


def result_label(method: str, density: float = 1.0, reference: bool = False, adapted: bool = False) -> str:
    """The short label of a result, in layer names and the score table: 'convnp', 'convnp+ref 50%'…"""
    label = method
    if reference and method not in NEEDS_REFERENCE:  # a two-date baseline always has one: no need to say
        label += "+ref"
    if adapted:
        label += "+adapt"
    if density < 1:
        label += f" {round(density * 100)}%"
    return label


def result_method(label: str) -> str:
    """The method of a result's label (`result_label`): what comes before '+ref', '+adapt' or ' 50%'."""
    return label.split(" ")[0].split("+")[0]


def _is_composite(layer) -> bool:
    return COMPOSITE_KEY in layer.metadata


def _is_bands(layer) -> bool:
    """Layers that hold bands: images, but not our RGB composites nor our results (a filled mean would be
    filled again), nor stacks of dates (the stack dock fills those). An RGB layer opened by another reader counts
    (its three channels are the bands)."""
    from napari.layers import Image

    return (isinstance(layer, Image) and not _is_composite(layer) and RESULT_KEY not in layer.metadata
            and STACK_KEY not in layer.metadata)


def _is_mask(layer) -> bool:
    """Labels layers, but not the maps made from a result (a water map carries its fill's label): those are
    products to compare, not pixels to fill."""
    from napari.layers import Labels

    return isinstance(layer, Labels) and "label" not in layer.metadata.get(RESULT_KEY, {})


def _is_savable(layer) -> bool:
    from napari.layers import Image

    return isinstance(layer, Image)


def _mask_colours():
    """Pixels to fill in magenta, a colour no Landsat composite has: the gaps stand out."""
    from napari.utils.colormaps import DirectLabelColormap

    return DirectLabelColormap(color_dict={None: "transparent", 0: "transparent", 1: "magenta"})


KNOWN_COLOUR = "#606060"  # a variance of exactly 0 (a known pixel): neutral grey, unlike magma and unlike no value


def variance_colormap():
    """magma for the variance in the gaps; known pixels (variance 0, certain) in grey; pixels without a
    value (NaN: nodata not filled, such as the off-scene border) transparent, as napari shows no data. So
    'certain' and 'unknown' never look alike, and no colour leaks through layers stacked above."""
    from napari.utils.colormaps import Colormap, ensure_colormap

    magma = ensure_colormap("magma")
    return Colormap(colors=magma.colors, controls=magma.controls, name="variance (magma)",
                    low_color=KNOWN_COLOUR, nan_color="transparent")


def _canvas_grid(viewer):
    canvas = getattr(viewer, "canvas", None)
    return getattr(canvas, "grid", None) or viewer.grid


def _display(result, job, preview=None) -> dict:
    """Contrast limits (and the standard deviation) of a result, worked out in the worker thread: on a
    whole scene these percentiles take seconds the GUI would freeze for. The mean's RGB composite,
    stretched as the scene's own. preview: of a streamed result (`_run._fill_streamed`), its kept rows and
    columns, for the limits and as the layers' low levels (with `_halved_down`'s); its RGB composite made on the
    way; its std stays lazy."""
    mean, variance, mask = (preview["mean"], preview["variance"], preview["mask"]) if preview else (
        result.mean, result.variance, job.mask)
    out = {"mean": contrast_limits(mean), "preview": preview}
    if preview is not None:
        out["rgb"] = preview["rgb"]
    elif (choice := default_composite(job.scene)) is not None:
        out["rgb"] = rgb_composite(job.scene.with_bands(result.mean), choice, composite_limits(job.scene, choice))
    if variance is not None:
        in_gaps = variance[mask]
        in_gaps = in_gaps[np.isfinite(in_gaps)]
        top = float(np.percentile(in_gaps, 90)) if in_gaps.size else 1.0  # the tail would wash it out
        out["variance"] = (0.0, top or 1.0)
        if job.show_std:
            out["std"] = np.sqrt(result.variance)
            if preview is not None:
                preview["std"] = np.sqrt(preview["variance"])
            out["std_limits"] = (0.0, float(np.sqrt(top)) or 1.0)
    if preview is not None and preview["step"] > 1:
        if preview.get("rgb") is not None:
            step = preview["step"]
            preview["RGB"] = np.ascontiguousarray(preview["rgb"][::step, ::step])
        preview["coarser"] = {kind: _halved_down(preview[kind], rgb=kind == "RGB")
                              for kind in ("mean", "variance", "std", "RGB") if preview.get(kind) is not None}
    return out


def _halved_down(low: np.ndarray, rgb: bool) -> list[np.ndarray]:
    """The levels under `low`, each every other row and column of the one before, until the longer side fits
    COARSEST_SIDE; copies (contiguous, made here in the worker, not strided views copied at each draw)."""
    out = []
    while max(low.shape[-3:-1] if rgb else low.shape[-2:]) > COARSEST_SIDE:
        low = np.ascontiguousarray(low[..., ::2, ::2, :] if rgb else low[..., ::2, ::2])
        out.append(low)
    return out


def levels(data, display: dict, kind: str):
    """What a result's layer holds: the result itself, or for a streamed one with a preview the levels of a
    multiscale image, [the result read from its file, every k-th row and column in memory, and that halved down to
    COARSEST_SIDE]: napari shows a level in memory while the whole scene is in view and reads the file only for the
    part in view when zoomed in, never a whole band on the GUI thread (2.5 s a layer on a 7000×8000 scene)."""
    preview = display.get("preview")
    if preview is None or preview["step"] == 1 or data is None:
        return data
    # made by `_display`, off the GUI thread: mean, variance, std, RGB (the composite's k-th rows and columns)
    return [data, preview[kind], *preview["coarser"][kind]]


def full_data(layer):
    """A layer's pixels at full resolution: a multiscale layer's (`levels`) first level."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def mask_pixels(mask: np.ndarray) -> int:
    """Pixels marked in any band (a C×H×W mask counts a pixel once, not once per band)."""
    mask = np.asarray(mask)
    return int(np.count_nonzero(mask.any(0) if mask.ndim == 3 else mask))


def default_filename(layer) -> str:
    """'<scene>_<method>_<kind>.tif' for a result (its layer name leaves the scene out), else the layer name."""
    info = layer.metadata.get(RESULT_KEY)
    if info and info.get("label"):
        stem = f"{info['source']}_{info['label']}_{info['kind']}"
    else:
        stem = layer.name
    for old, new in ((" ", "_"), ("%", "pct"), ("+", "_"), ("·", ""), ("__", "_")):
        stem = stem.replace(old, new)
    return f"{stem}.tif"


def canvas_overlay(viewer, name: str):
    """napari's 'scale_bar' or 'text' overlay: napari 0.9 keeps them among the canvas overlays (the viewer's
    `scale_bar` and `text_overlay` warn there); older ones on the viewer."""
    overlays = getattr(getattr(viewer, "canvas", None), "overlays", None)
    if overlays is not None and name in overlays:
        return overlays[name]
    return getattr(viewer, {"text": "text_overlay"}.get(name, name), None)


def show_scale_bar(viewer) -> None:
    bar = canvas_overlay(viewer, "scale_bar")
    if bar is not None:
        bar.visible = True


MAX_BANDS_LAST = 32  # a 3-D layer whose last axis is at most this long, and its first longer, has its bands last


def _bands_last(layer) -> bool:
    """An RGB layer's colour axis, or the short last axis of a multi-band GeoTIFF as napari's builtin reader
    gives it (H×W×C, not RGB), holds the bands."""
    shape = np.shape(layer.data)
    return len(shape) == 3 and (getattr(layer, "rgb", False) or shape[2] <= MAX_BANDS_LAST < shape[0])


def _layouts(layer) -> tuple[tuple[int, ...], ...]:
    """The C×H×W shapes a layer's pixels can be: bands first, or bands last (from its shape: no pixel read)."""
    shape = tuple(np.shape(layer.data))
    if len(shape) == 2:
        return ((1, *shape),)
    if len(shape) == 3:
        return shape, (shape[2], shape[0], shape[1])
    return (_bands_first(layer).shape,)  # raises: not bands × rows × columns


def _bands_first(layer) -> np.ndarray:
    """A layer's pixels as C×H×W (bands last, `_bands_last`, are moved first)."""
    data = np.asarray(full_data(layer))
    if _bands_last(layer):
        data = np.moveaxis(data, -1, 0)
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise InputError(f"'{layer.name}' has shape {data.shape}: not bands × rows × columns")
    return data


def find_layer(viewer, source: str, kind: str):
    """The layer this plugin made of this kind ('gaps', 'simulated SLC-off'…) over the scene layer `source`."""
    return next((lay for lay in viewer.layers
                 if lay.metadata.get(RESULT_KEY, {}).get("source") == source
                 and lay.metadata.get(RESULT_KEY, {}).get("kind") == kind), None)


def layer_name(viewer, base: str, source: str) -> str:
    """`base` while it is free; a name of another scene's layer gets that scene's name after it."""
    return base if base not in viewer.layers else f"{base} · {source}"


def add_mask_layer(viewer, mask: np.ndarray, kind: str, layer, source_scene: Scene | None, **metadata):
    """A mask layer over `layer` (same scale and translate); re-detecting or re-simulating replaces it."""
    data = mask.astype(np.uint8)
    meta = {RESULT_KEY: {"source": layer.name, "kind": kind}, **metadata}
    if source_scene is not None:
        meta[SCENE_KEY] = source_scene  # so a saved mask keeps the scene's georeferencing
    existing = find_layer(viewer, layer.name, kind)
    if existing is not None and existing.data.shape == data.shape:
        existing.data = data
        existing.metadata.update(meta)
        mask_layer = existing
    else:
        mask_layer = viewer.add_labels(data, name=layer_name(viewer, kind, layer.name), opacity=0.5,
                                       metadata=meta, colormap=_mask_colours(),
                                       **fit_placement(layer_placement(layer), data.ndim))
    return mask_layer


def result_layer(viewer, job, data, label: str, kind: str, **kwargs):
    """The layer of a result: a re-run with the very same settings (scene, mask, reference) replaces its own
    layer; a run with another mask or reference adds one, named by what differs (`result_name`), unless
    job.replace, when it takes over the earlier layer of its label and kind. A layer it adds is hidden, for the
    caller to show in a later turn of napari's loop: its first slicing and drawing then freeze the GUI apart from
    napari's making of the layer (`GapFillWidget._show_result`)."""
    info = {"source": job.source, "label": label, "kind": kind, "mask": job.mask_name,
            "reference": job.reference_name}
    meta = {SCENE_KEY: job.scene, RESULT_KEY: info}
    if "contrast_limits" in kwargs:
        meta[OWN_LIMITS_KEY] = tuple(kwargs["contrast_limits"])
    def matching(keys):
        return next((lay for lay in viewer.layers
                     if all(lay.metadata.get(RESULT_KEY, {}).get(key) == info[key] for key in keys)), None)

    multiscale = isinstance(data, list)  # `levels`
    full = data[0] if multiscale else data
    existing = matching(tuple(info)) or (matching(("source", "label", "kind")) if job.replace else None)
    if existing is not None and existing.multiscale == multiscale and np.shape(existing.data) == full.shape:
        existing.data = data
        for key, value in kwargs.items():
            setattr(existing, key, value)
        if existing.metadata.get(RESULT_KEY) != info:  # replaced on purpose: named by what it now holds
            existing.name = result_name(viewer, info, own=existing)
        existing.metadata.update(meta)
        layer = existing
    else:
        if existing is not None and np.shape(existing.data) == full.shape:  # the same result, but napari cannot
            viewer.layers.remove(existing)  # make a layer multiscale (or not) after it is made
        ndim = full.ndim - 1 if kwargs.get("rgb") else full.ndim  # an RGB layer's last axis is its colours
        layer = viewer.add_image(data, name=result_name(viewer, info), metadata=meta, multiscale=multiscale,
                                 visible=False, **fit_placement(job.placement, ndim), **kwargs)
    return layer


def result_name(viewer, info: dict, own=None) -> str:
    """'<label> <kind>' while free; else that name and what differs from the layer holding it: its scene, its
    mask or its reference ('idw mean · sf_bay_landsat7_768', 'convnp mean · painted'); a number as the last
    resort. `own`: a layer whose name does not count as taken."""
    base = f"{info['label']} {info['kind']}"
    taken = {lay.name: lay for lay in viewer.layers if lay is not own}
    if base not in taken:
        return base
    holder = taken[base].metadata.get(RESULT_KEY, {})
    for key in ("source", "mask", "reference"):
        name = f"{base} · {info[key]}"
        if info[key] and holder.get(key) != info[key] and name not in taken:
            return name
    n = 2
    while f"{base} ({n})" in taken:
        n += 1
    return f"{base} ({n})"


def share_limits(viewer, source: str, kind: str) -> None:
    """Give the `kind` layers ('variance', 'std') of one scene the same contrast limits, the widest of their own,
    so that results of other densities, references or methods compare by eye."""
    layers = [lay for lay in viewer.layers if OWN_LIMITS_KEY in lay.metadata
              and lay.metadata.get(RESULT_KEY, {}).get("source") == source
              and lay.metadata[RESULT_KEY].get("kind") == kind]
    if layers:
        limits = (min(lay.metadata[OWN_LIMITS_KEY][0] for lay in layers),
                  max(lay.metadata[OWN_LIMITS_KEY][1] for lay in layers))
        for layer in layers:
            layer.contrast_limits = limits


def label_cells(viewer, grid):
    """Show each layer's name in its grid cell, in a smaller font when it is long for the cell (a Landsat
    product name, a grid of many columns), so that it does not run into the next cell's label."""
    columns = max(1, grid.actual_shape(viewer.layers)[1])
    cell = viewer.canvas.size[1] / columns - LABEL_MARGIN  # pixels
    for layer in viewer.layers:
        overlay = getattr(layer, "name_overlay", None)
        if overlay is not None:
            overlay.font_size = max(5.0, min(10.0, cell / LABEL_CHARACTER_WIDTH / max(len(layer.name), 1)))
            overlay.visible = True


def layer_scene(layer) -> tuple[Scene, Scene | None]:
    """(the scene to fill, the scene as read from its file) of a bands layer.

    A layer from this plugin carries its Scene. A layer opened by another reader (napari's builtins
    give an int16 RGB layer with -999 values) is read again from its file, when it has one, so its
    nodata, band names and georeferencing are known; else its pixels are the bands and NaN is nodata."""
    source = layer.metadata.get(SCENE_KEY)
    if source is None and layer.metadata.get(FROM_FILE_KEY) is not False:  # False: its file did not fit
        path = getattr(getattr(layer, "source", None), "path", None)
        if path:
            try:
                source = read_scene(path)
            except SceneError:
                source = None
            if source is not None and source.shape in _layouts(layer):
                layer.metadata[SCENE_KEY] = source
                layer.metadata[FROM_FILE_KEY] = True
            else:
                source = None
                layer.metadata[FROM_FILE_KEY] = False  # read once, not on every picker change
    if source is not None and (layer.metadata.get(FROM_FILE_KEY) or layer.data is source.bands):
        return source, source
    bands = _bands_first(layer)
    return scene_of(bands, {"metadata": layer.metadata}), source


def enter_grid(viewer, grid, bands) -> tuple[list, list]:
    """Side by side: masks and composites (the scene's and the fills') out of the cells, the hidden bands layer in
    one, every cell labelled. Returns (the layers hidden, the layers shown), for `leave_grid`."""
    hidden = [lay for lay in viewer.layers if lay.visible and (
        _is_mask(lay) or _is_composite(lay) or lay.metadata.get(RESULT_KEY, {}).get("kind") == "RGB")]
    for layer in hidden:
        layer.visible = False
    shown = [bands] if bands is not None and not bands.visible else []
    for layer in shown:
        layer.visible = True
    label_cells(viewer, grid)
    return hidden, shown


def leave_grid(viewer, hidden: list, shown: list) -> None:
    """Undo `enter_grid`: the layers it hid shown again, the one it showed hidden, no cell labels."""
    for layer in hidden:
        if layer in viewer.layers:
            layer.visible = True
    for layer in shown:
        if layer in viewer.layers:
            layer.visible = False
    for layer in viewer.layers:
        overlay = getattr(layer, "name_overlay", None)
        if overlay is not None:
            overlay.visible = False
