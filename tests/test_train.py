"""Training runs end to end on the real scenes (a few steps), and tasks look like the real thing."""
import numpy as np
import pytest

from napari_convnp import cli
from napari_convnp.model import ConvCNP, ModelConfig, load_model
from napari_convnp.train import TaskSampler, gaussian_nll, with_reference


def test_train_command_writes_a_loadable_checkpoint(data_dir, tmp_path, capsys):
    out = tmp_path / "w.pt"
    cache = tmp_path / "cache.npz"
    assert cli.main(["train", "--data", str(data_dir), "--out", str(out), "--steps", "4", "--batch", "2",
                     "--log-every", "2", "--device", "cpu", "--cache", str(cache)]) == 0
    model = load_model(out)
    assert model.info["steps"] in (2, 4) and np.isfinite(model.info["best"]["single"]["nll"])
    assert cache.exists()  # a second run reads the prepared images from the cache
    assert cli.main(["train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "w2.pt"), "--steps", "2",
                     "--batch", "2", "--log-every", "2", "--device", "cpu", "--cache", str(cache)]) == 0


def test_train_command_takes_the_widths_and_the_task_mix(data_dir, tmp_path, capsys):
    """--channels trains another architecture from scratch (its checkpoint loads as such); --reference-share sets
    the mix of tasks; both refuse what they cannot mean, before any work."""
    out, cache = tmp_path / "w.pt", tmp_path / "cache.npz"
    base = ["train", "--data", str(data_dir), "--out", str(out), "--steps", "2", "--batch", "2", "--log-every", "2",
            "--device", "cpu", "--cache", str(cache)]
    assert cli.main(base + ["--channels", "8,16,24", "--reference-share", "0,0.5"]) == 0
    model = load_model(out)
    assert model.config.channels == (8, 16, 24) and model.info["reference_share"] == [0.0, 0.5]
    for option, value, message in (("--channels", "8", "two or more"), ("--channels", "8,x", "two or more"),
                                   ("--reference-share", "0.8,0.4", "at most 1"), ("--reference-share", "1", "two")):
        capsys.readouterr()
        assert cli.main(base + [option, value]) == 2
        assert message in capsys.readouterr().err
    other = ["--out", str(tmp_path / "other.pt")]
    assert cli.main(base + other + ["--channels", "8,16", "--init", str(out)]) == 2
    assert "--init takes the checkpoint's own widths" in capsys.readouterr().err


@pytest.mark.slow
def test_tasks_and_loss():
    rng = np.random.default_rng(0)
    images = [rng.normal(size=(4, 160, 160)).astype(np.float32)]
    values, known, context, target, ref, ref_known, n_bands = TaskSampler(images, [], seed=0).batch(3)
    assert values.shape == (3 * n_bands, 1, 128, 128)
    assert ((context + target) <= known + 1e-6).all()  # context and targets are disjoint and known
    assert (context * target == 0).all() and target.sum() > 0
    assert ref_known.sum() == 0  # no reference asked for
    model = ConvCNP()
    mean, var = model(values, context, n_bands)
    assert mean.shape == values.shape and (var > 0).all()
    loss = gaussian_nll(mean, var, values, target)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.slow
def test_tasks_with_a_reference_date():
    rng = np.random.default_rng(0)
    images = [rng.normal(size=(4, 160, 160)).astype(np.float32)]
    dates = rng.normal(size=(3, 4, 160, 160)).astype(np.float32)
    sampler = TaskSampler(images, [], seed=0, groups=[dates], reference_share=(0.5, 0.5))
    values, known, context, target, ref, ref_known, n_bands = sampler.batch(8)
    assert ref.shape == values.shape and ref_known.mean() > 0.3
    assert (ref[ref_known == 0] == 0).all()  # unknown reference pixels carry no value
    model = ConvCNP(ModelConfig(reference=True))
    mean, var = model(values, context, n_bands, ref, ref_known)
    gaussian_nll(mean, var, values, target).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_widened_model_answers_as_before_without_a_reference():
    rng = np.random.default_rng(1)
    values, _, context, _, _, _, n_bands = TaskSampler([rng.normal(size=(3, 160, 160)).astype(np.float32)], [],
                                                       seed=1).batch(2)
    single = ConvCNP().eval()
    wide = with_reference(single).eval()
    a, b = single(values, context, n_bands), wide(values, context, n_bands)
    assert np.allclose(a[0].detach(), b[0].detach(), atol=1e-4) and np.allclose(a[1].detach(), b[1].detach(), atol=1e-4)
