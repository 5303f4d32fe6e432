"""The detected gaps (magenta) over every real SLC-off scene, as napari shows them after "Detect
gaps": one canvas screenshot per file, put side by side in docs/figures/detected_gaps.png.

bash scripts/with_display.sh .venv/bin/python benchmarks/gap_detection_figure.py [DATA_DIR]
"""
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

DATA = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parents[2] / "shared" / "data")
OUT = Path(__file__).parents[1] / "docs" / "figures" / "detected_gaps.png"
SIZE = 420


def main():
    files = sorted(p for p in (DATA / "slc_off").glob("*.tif") if "gapmask" not in p.name)
    if not files:
        sys.exit(f"{DATA}/slc_off is absent: nothing to show")
    panels = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, path in enumerate(files):
            shot = Path(tmp) / f"{i}.png"
            subprocess.run([sys.executable, "-m", "napari_convnp.demo", "--file", str(path), "--steps", "detect",
                            "--screenshot", str(shot), "--canvas-only"], check=True, capture_output=True)
            panel = Image.open(shot).convert("RGB")
            panel.thumbnail((SIZE, SIZE))
            canvas = Image.new("RGB", (SIZE, SIZE + 24), "white")
            canvas.paste(panel, ((SIZE - panel.width) // 2, 24))
            ImageDraw.Draw(canvas).text((4, 6), path.name[:70], fill="black")
            panels.append(canvas)
    cols = 3
    rows = -(-len(panels) // cols)
    sheet = Image.new("RGB", (cols * SIZE, rows * (SIZE + 24)), "white")
    for i, panel in enumerate(panels):
        sheet.paste(panel, ((i % cols) * SIZE, (i // cols) * (SIZE + 24)))
    sheet.save(OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
