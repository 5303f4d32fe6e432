"""The scripts and the package as a user gets them: demo.sh without a display, setup.sh run twice, the wheel."""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
SAMPLE_FILES = {"sf_bay_landsat7_768.tif", "itaipu_landsat8_B234_768.tif", "LE07_L2SP_225078_20110306_slc_off_B1.tif"}


def _without_display():
    return {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}


def test_demo_without_a_display_says_how_to_see_it():
    """No display: a message naming Xvfb and --screenshot and exit code 2, at once, not an invisible napari."""
    run = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], env=_without_display(), capture_output=True,
                         text=True, timeout=30)
    assert run.returncode == 2
    assert "no display" in run.stderr and "--screenshot" in run.stderr and "Xvfb" in run.stderr


@pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs a display (run under scripts/with_display.sh)")
def test_demo_screenshot_saves_and_exits(tmp_path):
    out = tmp_path / "demo.png"
    run = subprocess.run([sys.executable, "-m", "napari_convnp.demo", "--sample", "sf_bay", "--screenshot", str(out),
                          "--size", "900x600"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"saved a screenshot of the viewer to {out}" in run.stderr


def test_setup_installs_again_only_when_the_package_definition_changes(tmp_path):
    """setup.sh with a stand-in python that records its calls: `pip install -e` runs the first time, not the
    second, and again after setup.cfg changes."""
    for name in ("setup.cfg", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    fake = tmp_path / ".venv" / "bin" / "python"
    fake.parent.mkdir(parents=True)
    fake.write_text('#!/bin/sh\necho "$*" >> "$(dirname "$0")/../../calls.log"\nexit 0\n')
    fake.chmod(0o755)
    env = {**os.environ, "DISPLAY": os.environ.get("DISPLAY", ":0")}  # never the apt-get branch here

    def installs():
        subprocess.run(["bash", str(tmp_path / "scripts" / "setup.sh")], env=env, check=True, capture_output=True,
                       timeout=60)
        log = (tmp_path / "calls.log").read_text().splitlines()
        return sum("pip install -q -e" in line for line in log)

    assert installs() == 1
    assert installs() == 1  # nothing changed: no second install
    with open(tmp_path / "setup.cfg", "a") as cfg:
        cfg.write("\n# a new extra\n")
    assert installs() == 2


def test_the_wheel_carries_samples_and_weights(tmp_path):
    """`pip install .` or the wheel must give File › Open Sample its files (not only an editable install)."""
    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "napari_convnp", src / "napari_convnp", ignore=shutil.ignore_patterns("__pycache__"))
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                          "-w", str(tmp_path / "dist"), "-q"], capture_output=True, text=True, timeout=600)
    if run.returncode != 0 and "No module named" in run.stderr:
        pytest.skip(f"cannot build a wheel offline here: {run.stderr.strip().splitlines()[-1]}")
    assert run.returncode == 0, run.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("napari_convnp-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"napari_convnp/sample_data/{f}" for f in SAMPLE_FILES} <= names
    assert "napari_convnp/weights/convcnp.pt" in names and "napari_convnp/napari.yaml" in names
    # installed from the wheel (no source tree beside it), the sample commands find their files
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    code = ("import napari_convnp._sample_data as s; layers = s.sample_sf_bay(); "
            "print(s.SAMPLE_DIR); print(layers[-1][0].shape)")
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(site)},
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    folder, shape = run.stdout.split("\n")[:2]
    assert Path(folder).is_relative_to(site) and shape == "(3, 768, 768)"
