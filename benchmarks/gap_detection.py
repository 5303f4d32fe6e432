"""Gap detection on the real SLC-off scenes of ../shared/data/slc_off: agreement with the official
USGS per-band gap mask (600 m scene) and the detected fraction on every file.

python benchmarks/gap_detection.py [DATA_DIR]  → prints a Markdown table, writes benchmarks/gap_detection.json
"""
import json
import sys
from pathlib import Path

from napari_convnp import masks
from napari_convnp.scene import read_scene

DATA = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parents[2] / "shared" / "data")


def detect(scene):
    return masks.detect_gaps(scene.bands, scene.nodata, pixel_size=scene.pixel_size,
                             zero_is_ambiguous=masks.scene_zero_is_ambiguous(scene.nodata_value, scene.source_dtype))


def main():
    if not (DATA / "slc_off").is_dir():
        sys.exit(f"{DATA}/slc_off is absent: nothing to measure")
    folder = DATA / "slc_off"
    out = {"official": [], "files": []}
    stem = "wagl__LE07_L1TP_092084_20110809_20161206_01_T1_RR600m"
    scene = read_scene(folder / f"{stem}_8band.tif")
    official = read_scene(folder / f"{stem}_gapmask.tif").bands == 0
    inside = ~masks.detect_large_nodata(official, pixel_size=scene.pixel_size)  # leave out the off-scene border
    gaps = detect(scene)
    print("| band | precision | recall | official gap share inside the scene |\n|---|---|---|---|")
    for b, name in enumerate(scene.band_names):
        truth, found = official[b] & inside[b], gaps[b]
        row = {"band": name, "precision": float((found & truth).sum() / found.sum()),
               "recall": float((found & truth).sum() / truth.sum()), "gap_share": float(truth.sum() / inside[b].sum())}
        out["official"].append(row)
        print(f"| {name} | {row['precision']:.4f} | {row['recall']:.4f} | {row['gap_share']:.3f} |")
    print("\n| file | nodata share | detected gap share | gaps / nodata |\n|---|---|---|---|")
    for path in sorted(folder.glob("*.tif")):
        if "gapmask" in path.name:
            continue
        scene = read_scene(path)
        gaps = detect(scene)
        row = {"file": path.name, "nodata": float(scene.nodata.mean()), "gaps": float(gaps.mean())}
        out["files"].append(row)
        ratio = row["gaps"] / row["nodata"] if row["nodata"] else 0
        print(f"| {path.name} | {row['nodata']:.3f} | {row['gaps']:.3f} | {ratio:.2f} |")
    (Path(__file__).parent / "gap_detection.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
