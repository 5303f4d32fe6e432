"""Issue 25.6: `fill` names every phase of its work through on_phase(text, done, total), beside the two-argument
progress(done, total) callbacks, which see what they saw before."""
from __future__ import annotations

import numpy as np
import pytest

from napari_convnp import baselines
from napari_convnp.inpaint import FillError, fill
from tests.conftest import smooth


def _stripes(c, h, w):
    mask = np.zeros((c, h, w), bool)
    mask[:, :, 20:24] = True
    mask[:, 50:53, :] = True
    return mask


def test_a_convnp_fill_names_its_calibration_and_tiles_and_the_old_progress_sees_tiles_alone():
    bands = smooth(3, 160, 192, np.float32)
    mask = _stripes(*bands.shape)
    phases, tiles, plain_tiles = [], [], []
    fill(bands, mask, device="cpu", tile=128, on_phase=lambda *p: phases.append(p),
         progress=lambda done, total: tiles.append((done, total)))
    fill(bands, mask, device="cpu", tile=128, progress=lambda done, total: plain_tiles.append((done, total)))
    texts = [text for text, _, _ in phases]
    assert texts[0] == "checking the mask and the known pixels"
    calibrating = [(d, t) for text, d, t in phases if text.startswith("calibrating on the scene: ")]
    assert calibrating[0][0] == 0 and calibrating[-1][0] == calibrating[-1][1] > 0
    assert f"calibrating on the scene: {calibrating[-1][0]} of {calibrating[-1][1]} tasks" in texts
    predicted = [(d, t) for text, d, t in phases if text.startswith("convnp: ")]
    assert predicted == tiles == plain_tiles and predicted[-1][0] == predicted[-1][1] > 1
    assert texts.index(f"convnp: 1 of {predicted[-1][1]} tiles") > texts.index(
        f"calibrating on the scene: {calibrating[-1][0]} of {calibrating[-1][1]} tasks")


def test_adaptation_steps_are_a_phase_of_their_own():
    bands = smooth(2, 128, 128, np.float32)
    phases = []
    fill(bands, _stripes(*bands.shape), device="cpu", adapt_steps=2, biharmonic_weight=0.0,
         on_phase=lambda *p: phases.append(p))
    assert [p for p in phases if p[0].startswith("adapting")] == [
        ("adapting to the scene: 1 of 2 steps", 1, 2), ("adapting to the scene: 2 of 2 steps", 2, 2)]


def test_a_classical_fill_names_each_band_and_equals_the_fill_of_all_bands_at_once():
    bands = smooth(3, 64, 96, np.float32)
    mask = _stripes(*bands.shape)
    phases, progress = [], []
    result = fill(bands, mask, method="harmonic", on_phase=lambda *p: phases.append(p),
                  progress=lambda *p: progress.append(p))
    assert [p for p in phases if p[0].startswith("harmonic")] == [
        ("harmonic: band 1 of 3", 0, 3), ("harmonic: band 2 of 3", 1, 3), ("harmonic: band 3 of 3", 2, 3)]
    assert progress == [(0, 1), (1, 1)]  # as before: the two-argument callback sees one step
    whole = baselines.harmonic(np.where(mask, 0, bands).astype(np.float32), ~mask)
    np.testing.assert_array_equal(result.mean[mask], whole[mask])


def test_a_two_date_fill_says_it_fills_every_band_at_once():
    bands = smooth(2, 64, 96, np.float32)
    phases = []
    fill(bands, _stripes(*bands.shape), method="regression", reference=bands * 1.1,
         on_phase=lambda *p: phases.append(p))
    assert ("regression: every band at once", 0, 0) in phases


def test_on_phase_that_cannot_be_called_is_refused_by_name():
    bands = smooth(1, 32, 32, np.float32)
    with pytest.raises(FillError, match="on_phase"):
        fill(bands, _stripes(*bands.shape), method="idw", on_phase="print")


def test_a_cancel_during_the_calibration_stops_it_before_the_tiles():
    """A whole scene's calibration takes minutes on a CPU: Cancel is heard between its passes, not after it."""
    from napari_convnp.inpaint import Cancelled

    bands = smooth(3, 160, 192, np.float32)
    phases = []
    with pytest.raises(Cancelled):
        fill(bands, _stripes(*bands.shape), device="cpu", tile=128, on_phase=lambda *p: phases.append(p),
             cancelled=lambda: any(text.startswith("calibrating") for text, _, _ in phases))
    assert phases[-1][0].startswith("calibrating on the scene: 0 of") and not any("tiles" in p[0] for p in phases)
