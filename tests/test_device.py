"""The GPU code path, run on the CPU: the CUDA decisions of :func:`equipath.training.device.device_plan`
(bf16 autocast, channels-last, ``non_blocking``) taken on the CPU through the trainer, the slide runner and
the training benchmark, for every registered model; channels-last keeps exact equivariance."""

import functools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from equipath.data import write_synthetic_pcam
from equipath.models import create_model, list_models
from equipath.nn import GroupConv2d, GroupConvTranspose2d, IsotropicConv2d, LiftingConv2d, ProjectionConv2d
from equipath.nn.conv import set_channels_last
from equipath.nn.harmonic import HarmonicConv2d
from equipath.testing import assert_equivariant, equivariance_error
from equipath.training import TrainConfig, train
from equipath.training import trainer as trainer_module
from equipath.training.device import device_plan
from equipath.wsi.inference import Grid, predict_dense, predict_patches
from equipath.wsi.reader import SlideView, open_slide

ROOT = Path(__file__).resolve().parents[1]
SMALL = {  # tiny widths: every registered model must appear here (checked below)
    "p4m_densenet": {"growth": 8}, "p4m_densenet_m": {"growth": 8}, "p4_densenet": {"growth": 4},
    "densenet": {"growth": 2}, "densenet_m": {"growth": 2},
    "p4m_unet": {"width": 6}, "p4_unet": {"width": 4}, "unet": {"width": 2},
    "p4m_gerunet": {"width": 6}, "p4m_gerunet_concat": {"width": 6}, "resunet": {"width": 2},
    "iso_unet": {"width": 4}, "iso_unet_baseline": {"width": 2},
}
CUDA_ON_CPU = functools.partial(device_plan, as_cuda=True)


def test_every_registered_model_has_a_small_config():
    assert set(list_models()) == set(SMALL)


def test_plan_decisions():
    cpu = device_plan("cpu")
    assert (cpu.amp_dtype, cpu.channels_last, cpu.non_blocking, cpu.pin_memory) == (None, False, False, False)
    forced = device_plan("cpu", as_cuda=True)
    assert (forced.amp_dtype, forced.channels_last, forced.non_blocking) == (torch.bfloat16, True, True)
    assert not forced.pin_memory and not forced.cudnn_benchmark  # need a GPU
    assert device_plan("cpu", amp=False, as_cuda=True).amp_dtype is None
    assert device_plan("cpu", amp=True).amp_dtype == torch.bfloat16
    with pytest.raises(ValueError, match="unknown device"):
        device_plan("tpu")


def test_plain_channels_last_cannot_convert_group_weights_but_set_channels_last_can():
    """The crash of issue 15, and its fix."""
    model = create_model("p4m_densenet", growth=8).eval()
    with pytest.raises(RuntimeError, match="rank 4"):
        model.to(memory_format=torch.channels_last)
    x = torch.rand(2, 3, 128, 96)
    ref = model.forward_dense(x)
    set_channels_last(model)
    assert model.classifier.weight.is_contiguous(memory_format=torch.channels_last)
    assert model.stem.channels_last and model.stem.filter().is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(model.forward_dense(x), ref, rtol=0, atol=1e-5)


LAYERS = {
    "lifting": (lambda: LiftingConv2d(3, 4, 3, "p4m", padding=1), (2, 3, 9, 9)),
    "group": (lambda: GroupConv2d(3, 4, 3, "p4m", stride=2, padding=1), (2, 3, 8, 9, 9)),
    "projection": (lambda: ProjectionConv2d(3, 2, 3, "p4m"), (2, 3, 8, 9, 9)),
    "transposed": (lambda: GroupConvTranspose2d(3, 2, 2, "p4m", stride=2), (2, 3, 8, 5, 5)),
    "isotropic": (lambda: IsotropicConv2d(3, 4, 5, padding=2), (2, 3, 9, 9)),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_channels_last_is_exact_and_bf16_autocast_runs(name):
    build, shape = LAYERS[name]
    torch.manual_seed(0)
    layer, x = build().eval(), torch.randn(shape)
    ref = layer(x)
    set_channels_last(layer)
    out = layer(x)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    assert_equivariant(layer, x, "p4m")  # every element of p4m, float32 tolerance, in channels-last
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = layer(x)
    assert low.dtype == torch.bfloat16
    assert (low.float() - ref).abs().max() <= 0.05 * ref.abs().max()


def test_harmonic_layer_runs_under_bf16_autocast():
    torch.manual_seed(0)
    layer = HarmonicConv2d(3, 4, 5, 0, (0, 1), padding=2)
    x = torch.randn(2, 3, 12, 12)
    ref = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = layer(x)
    assert low.dtype == torch.bfloat16 and (low.float() - ref).abs().max() <= 0.05 * ref.abs().max()


@pytest.mark.parametrize("name", ["p4m_densenet", "p4m_unet", "p4m_gerunet", "iso_unet"])
def test_channels_last_models_stay_exactly_equivariant(name):
    torch.manual_seed(0)
    model = create_model(name, **SMALL[name]).eval()
    x = torch.rand(1, 3, *model.input_size)
    with torch.no_grad():
        ref = model(x)
    set_channels_last(model)
    torch.testing.assert_close(model(x), ref, rtol=0, atol=1e-5 * float(ref.abs().max()))
    group = "p4" if name == "iso_unet" else model.group
    assert equivariance_error(model, x, group).max() < 1e-5


@pytest.fixture(scope="module")
def pcam_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pcam")
    write_synthetic_pcam(root, {"train": 8, "valid": 4, "test": 4}, seed=0, progress=False)
    return root


def _train_config(name, out, pcam_root):
    model = create_model(name, **SMALL[name])
    values = {"model": name, "model_kwargs": SMALL[name], "epochs": 1, "batch_size": 2, "batches_per_epoch": 1,
              "eval_batch_size": 2, "progress": False, "out_dir": str(out), "device": "cpu", "amp": True}
    if model.task == "classification":
        values["data"] = {"dataset": "synthetic_pcam", "root": str(pcam_root), "val_samples": 2,
                          "synthetic_size": {"train": 8, "valid": 4, "test": 4}}
    else:
        values["data"] = {"dataset": "synthetic_segmentation", "patch_size": model.input_size[0], "val_samples": 2,
                          "synthetic_size": {"train": 4, "valid": 2, "test": 2}}
    return TrainConfig.from_dict(values)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_trainer_runs_the_cuda_setup_on_the_cpu(name, pcam_root, tmp_path, monkeypatch):
    """One epoch of one step through the trainer with its plan forced to the CUDA decisions."""
    plans = []

    def forced(*args, **kwargs):
        plans.append(CUDA_ON_CPU(*args, **kwargs))
        return plans[-1]

    monkeypatch.setattr(trainer_module, "device_plan", forced)
    result = train(_train_config(name, tmp_path / name, pcam_root))
    assert plans and plans[0].amp_dtype == torch.bfloat16 and plans[0].channels_last
    assert np.isfinite(result.history[0]["train_loss"]) and np.isfinite(result.history[0]["val_loss"])
    state = torch.load(result.last, weights_only=True)["state_dict"]
    assert all(v.dtype in (torch.float32, torch.int64) for v in state.values())  # bf16 only inside autocast


@pytest.mark.parametrize("name", sorted(SMALL))
def test_slide_runner_setup_runs_every_model_on_the_cpu(name):
    """The slide runner's set-up (fold, plan.apply, autocast) completes a forward step for every model;
    dense classifiers also run predict_dense and predict_patches, which agree."""
    from equipath.wsi.inference import _predictor, _Runner

    torch.manual_seed(0)
    model = create_model(name, **SMALL[name]).eval()
    plan = CUDA_ON_CPU("cpu")
    rng = np.random.default_rng(0)
    if not hasattr(model, "forward_dense"):
        runner = _Runner(model, plan, fold=True)
        pixels = rng.integers(0, 256, (2, *model.input_size, 3), dtype=np.uint8)
        x = runner._prepare(pixels)
        with torch.inference_mode(), plan.autocast():
            y = runner.model(x)
        assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()
        return
    image = rng.integers(0, 256, (160, 130, 3), dtype=np.uint8)
    view = SlideView.at(open_slide(image))
    grid = Grid.for_view(view, model)
    prob = predict_dense(model, view, grid, tile_cells=3, batch_size=2, device=plan, progress=False)
    cells = np.argwhere(np.ones(grid.shape, bool))
    patches = predict_patches(model, view, grid, cells, device=plan, progress=False)
    np.testing.assert_allclose(prob[cells[:, 0], cells[:, 1]], patches, atol=0.03)  # bf16
    with torch.inference_mode():
        assert _predictor(model, dense=True, tta=False)(torch.rand(1, 3, 96, 96)).dtype == torch.float32


@pytest.mark.slow
def test_train_benchmark_smoke_runs_the_cuda_path_on_the_cpu():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train.py"), "--smoke"], capture_output=True,
                         text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "bf16 autocast + channels-last" in out.stdout and "folded" in out.stdout and "densenet_m" in out.stdout


def _thp_setting(env_value):
    import os

    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if env_value is not None:
        env["THP_MEM_ALLOC_ENABLE"] = env_value
    code = "import os, equipath; print(os.environ.get('THP_MEM_ALLOC_ENABLE'))"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_importing_equipath_backs_large_cpu_blocks_with_huge_pages_unless_the_user_said_otherwise():
    """``import equipath`` sets PyTorch's ``THP_MEM_ALLOC_ENABLE`` before torch allocates (fresh activations
    then fault once per 2 MB; docs/benchmarks.md), and keeps a value the user set, 0 included."""
    assert _thp_setting(None) == "1"
    assert _thp_setting("0") == "0"
