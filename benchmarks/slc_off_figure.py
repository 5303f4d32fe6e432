"""Real SLC-off stripes beside simulated ones: the same geometry measured on both (scan period, slant,
lost share) and a picture, docs/figures/real_vs_simulated_slc_off.png.

python benchmarks/slc_off_figure.py [DATA_DIR]
"""
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from napari_convnp import masks
from napari_convnp._napari import stretch
from napari_convnp.scene import read_scene

DATA = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parents[2] / "shared" / "data")
ROOT = Path(__file__).parents[1]


def geometry(gaps: np.ndarray) -> dict:
    """Scan period (rows: the first strong peak of the autocorrelation down the columns), slant
    (degrees below the horizontal, left to right: the row shift that best aligns columns 40 apart,
    summed across the image) and lost share of a stripe mask."""
    g = gaps.astype(float) - gaps.mean()
    auto = np.array([np.mean(g[:-lag] * g[lag:]) for lag in range(1, 100)])
    peaks = [lag for lag in range(8, 98)
             if auto[lag - 1] >= max(auto[lag - 2], auto[lag]) and auto[lag - 1] > 0.5 * auto[7:].max()]
    step, total = 40, 0
    for c in range(0, gaps.shape[1] - step, step):
        shifts = range(-15, 16)
        agree = [np.mean(np.roll(gaps[:, c], s) == gaps[:, c + step]) for s in shifts]
        total += list(shifts)[int(np.argmax(agree))]
    slant = float(np.degrees(np.arctan(total / (step * ((gaps.shape[1] - step - 1) // step + 1)))))
    return {"period_rows": peaks[0] if peaks else None, "slant_deg": round(slant, 1),
            "lost_share": round(float(gaps.mean()), 3)}


def panel(image: np.ndarray, gaps: np.ndarray, title: str) -> Image.Image:
    grey = (stretch(image) * 255).astype(np.uint8)
    rgb = np.stack([grey] * 3, -1)
    rgb[gaps] = (255, 0, 255)
    out = Image.new("RGB", (rgb.shape[1], rgb.shape[0] + 22), "white")
    out.paste(Image.fromarray(rgb), (0, 22))
    ImageDraw.Draw(out).text((4, 5), title, fill="black")
    return out


def main():
    path = DATA / "slc_off" / "vpac_rsa__LE07_NBAR_095_082_20100508_B345.tif"
    if not path.exists():
        sys.exit(f"{path} is absent: nothing to compare")
    real = read_scene(path)
    rows, cols = slice(300, 700), slice(0, 900)  # the western part of the scene: wide gaps
    real_gaps = masks.detect_gaps(real.bands, real.nodata, pixel_size=real.pixel_size)[1, rows, cols]
    sample = read_scene(ROOT / "napari_convnp" / "sample_data" / "itaipu_landsat8_B234_768.tif").bands[2]
    shape = real_gaps.shape
    image = np.tile(sample, (1, 2))[: shape[0], : shape[1]]
    simulated = masks.simulate_slc_off(shape, seed=3, pixel_size=real.pixel_size, crop_offset=(0, 1350),
                                       angle_deg=14)  # crop_offset: where the crop sits in the scene
    sts = read_scene(DATA / "benchmark" / "sts-cnn" / "mask_slc1.tif").bands[0] == 0
    stats = {"real: Menindee 2010-05-08 (25 m, detected), 400x900 crop": geometry(real_gaps),
             "real: STS-CNN mask_slc1 (30 m), 400x400": geometry(sts),
             "simulated at 25 m, same place in the scene, angle_deg=14": geometry(simulated)}
    for angle in (8, 12):
        mask = masks.simulate_slc_off(sts.shape, seed=3, pixel_size=30, crop_offset=(0, 500), angle_deg=angle)
        stats[f"simulated at 30 m, 400x400, angle_deg={angle}"] = geometry(mask)
    print(json.dumps(stats, indent=1))
    left = panel(real.bands[1, rows, cols], real_gaps, "real Landsat 7 SLC-off gaps (Menindee 2010-05-08, B4)")
    right = panel(image, simulated, "simulated SLC-off stripes (25 m, 14 degrees) on a complete Landsat 8 image")
    sheet = Image.new("RGB", (left.width + right.width + 10, left.height), "white")
    sheet.paste(left, (0, 0))
    sheet.paste(right, (left.width + 10, 0))
    sheet.save(ROOT / "docs" / "figures" / "real_vs_simulated_slc_off.png")
    (Path(__file__).parent / "slc_off_geometry.json").write_text(json.dumps(stats, indent=1))


if __name__ == "__main__":
    main()
