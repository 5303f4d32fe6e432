"""Every tooltip of the dock widget in one place, keyed by control; a method's comes from its docstring."""
from __future__ import annotations

import inspect

from . import baselines

TOOLTIPS = {
    # 1. scene
    "open file": "Open a GeoTIFF (1–11 bands; nodata as NaN, a nodata tag or 0)",
    "open folder": "Open a Landsat product folder (*_B1.TIF … *_MTL.txt); the 15 m pan band is left out",
    "bands layer": "The image layer whose bands are filled: a scene opened here, by the reader, or by napari's "
                   "own TIFF reader (then nodata and georeferencing are read again from its file)",
    "composite": "Which bands to show as red, green and blue (2–98 % stretch), numbered as the "
                 "sensor numbers them: Landsat 8/9 bands are one higher than Landsat 7's",
    "reader preference": "Drag and drop and File › Open use this plugin for .tif/.tiff without asking (napari's reader "
                         "preference; change it in Preferences › Plugins). TIFFs that are not GeoTIFFs still go to "
                         "other readers.",
    # 2. mask
    "detect": "Find the scan-line gaps and small holes (not the off-scene border, "
              "not large blank areas, not dark water stored as 0)",
    "simulate": "Hide known pixels under realistic SLC-off stripes, so the "
                "fill can be scored against the truth (PSNR, SSIM, RMSE)",
    "paint": "An empty mask to paint the pixels to fill on",
    "seed": "Random seed of the simulated stripes: the same seed gives the same stripes",
    "mask layer": "The Labels layer whose nonzero pixels are filled",
    "invert mask": "Fill the mask layer's 0 pixels instead (a mask that marks the valid pixels, as the command "
                   "line's --invert-mask); where the mask file has no data nothing is filled. Applied at Run; the "
                   "results say 'inverted' after the mask's name",
    "combine op": "union: pixels in either mask; subtract: pixels of the mask above not in the other",
    "other mask": "The second mask to combine with the mask layer",
    "combine": "Make a new mask from the two",
    # 3. inpaint
    "reference": "Another date of the same place (a loaded bands layer) as extra context: the ConvNP uses it "
                 "where it agrees with the scene; the two-date methods need one. Aligned by georeferencing.",
    "needs reference": " Needs a reference (other date): choose one above.",
    "density": "Context density: the share of the known pixels the method may use (a seeded random subsample). "
               "100 % uses them all; lower values show how the fill and its variance degrade with less data.",
    "adapt": "Test-time adaptation: fine-tune the ConvNP on this scene's own known pixels for this many "
             "steps before filling (ConvNP only; slower; a small gain, see the README)",
    "blend": "ConvNP: the share of the biharmonic fill in the mean where no reference is known. The two err "
             "differently, so a blend beats both; by default the share is chosen on the scene's own known "
             "pixels. 0 % is the network alone (about a quarter faster).",
    "device": "Where the ConvNP runs: auto takes the GPU when torch finds one (the classical "
              "methods run on the CPU)",
    "show std": "Add a layer with the square root of the variance (in the data's units)",
    "replace": "A run with another mask or reference replaces the earlier results of the same method (and their "
               "scores) instead of adding layers named by what differs; a re-run with the very same settings "
               "always replaces its own",
    "run": "Fill the mask with each ticked method, one after another, in the background",
    "cancel": "Stop after the current tile; results already made stay",
    "side by side": "napari's grid: the bands and every result in its own labelled cell, all "
                    "fitted; masks and RGB composites are hidden meanwhile",
    "progress": "Tiles done of the method running now",
    "scores": "Scores of every run on this scene on the hidden pixels of its mask, where the truth is known "
              "(a simulated mask): SSIM over windows free of nodata; NLL (lower is better) and the share of "
              "hidden pixels inside mean ± 1.96·√variance (95 % is calibrated) for results with a variance. "
              "Click a header to sort.",
    # 4. save
    "save layer": "The layer to write; after a run, its newest result",
    "save": "Write the layer as float32 GeoTIFF with its scene's georeferencing; never over an input",
    # the stack dock (_stack.py)
    "stack open folder": "Open a folder of GeoTIFFs of one place, one per date (dates from Landsat product IDs, the "
                         "MTL, GDAL metadata or a leading 2008-04-19 in the name), as one layer with a date slider",
    "stack open files": "Open several GeoTIFFs of one place, one per date, as one layer with a date slider",
    "stack stack": "The stack of dates to fill (opened here, or a folder of dates dropped on napari)",
    "stack method": "convnp: the ConvNP with the other dates fused into one reference (mean and variance); the "
                    "two-date methods take the same fused reference (a mean only)",
    "stack references": "The most other dates used for each date, ranked by how much of its holes they know, how "
                        "near they are in time and season, and how well they predict it",
    "stack clouds": "Fill the clouds and shadows the quality band marks too; by default they keep their values and "
                    "only nodata, stripes and the other unusable pixels are filled",
    "stack this date": "Fill the date on screen (the date slider) from the others",
    "stack every date": "Fill every date from the others, one after another; each shows as it ends",
    # 5. water
    "water fill": "A ConvNP result (a mean with its variance layer): P(water) comes from its Gaussians",
    "water compare": "A classical fill of the scene: its water map (0 or 1, no probability) at the same threshold",
    "water index": "Water is the normalised difference (a − b)/(a + b) above the threshold: MNDWI (green, SWIR1) "
                   "where the scene has both, NDWI (green, NIR), NDVI (NIR, red: vegetation), or two bands",
    "water threshold": "Water where the index is above it. Moving it redraws P and the water maps at once (no "
                       "refill); the area's interval follows when the slider rests",
    "map water": "Make the P layer (0–1) and the water maps (P > 0.5) of the chosen fill, then the water area "
                 "with its 95 % interval",
    "cancel water": "Stop preparing the water maps, or computing the area's interval",
}


def method_description(method: str) -> str:
    """One or two sentences for the method's tooltip, from its docstring in the registry."""
    if method == "convnp":
        return ("The Convolutional Neural Process: a network trained on real Landsat scenes; gives the mean and "
                "its variance (how far the fill can be trusted).")
    registry = {**baselines.METHODS, **baselines.TWO_DATE_METHODS}
    doc = inspect.getdoc(registry.get(method)) or ""
    text = " ".join(doc.split("\n\n")[0].split())
    return text or method
