"""Backbones, checkpoint loading and per-second windows (shards.feature_spec, r2plus1d, s3d, weights).

No real weights are downloaded: state dicts carry the real files' key names and shapes
with random values, saved to tmp files and read back through load_backbone, the same
path real checkpoints take. Spatial sizes are small except one real-size pass each.
"""

import hashlib
import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from shards.feature_spec import (R21D, R21D_IG65M, S3D, BackboneSpec, crop_offsets, fps_filter_rows,  # noqa: E402
                                 fps_filter_ticks, fps_tick, get_spec, native_rows, num_windows, resized_size,
                                 window_frame_times)
from features.weights import WeightsError, load_backbone, random_backbone  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # The machine is shared; one intra-op thread is as fast here and does not starve others.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _randomised(state, seed):
    """Every float tensor random (running_var positive), so a wrong mapping cannot pass."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in state.items():
        if not value.is_floating_point():
            out[key] = value.clone()
        elif key.endswith("running_var"):
            out[key] = torch.rand(value.shape, generator=gen) + 0.5
        else:
            out[key] = torch.randn(value.shape, generator=gen) * 0.05
    return out


@pytest.fixture(scope="module")
def r21d_state():
    return _randomised(random_backbone("r21d", seed=0).state_dict(), seed=1)


@pytest.fixture(scope="module")
def s3d_state():
    state = _randomised(random_backbone("s3d", seed=0).state_dict(), seed=2)
    # The MIL-NCE file also holds the text branch; word_embd is 66250x300 there, cut to
    # 100 rows here since it is dropped unread.
    state["text_module.word_embd.weight"] = torch.randn(100, 300)
    state["text_module.fc1.weight"], state["text_module.fc1.bias"] = torch.randn(2048, 300), torch.randn(2048)
    state["text_module.fc2.weight"], state["text_module.fc2.bias"] = torch.randn(512, 2048), torch.randn(512)
    return state


def _save(obj, path):
    torch.save(obj, path)
    return path


def _same_weights(model, state):
    loaded = model.state_dict()
    return all(torch.equal(loaded[k], state[k]) for k in loaded if k in state)


# --- spec and windows ---------------------------------------------------------------

def test_specs_hold_the_recipe_and_round_trip_json():
    assert (R21D.fps, R21D.frames, R21D.short_side, R21D.crop, R21D.output_dim, R21D.member) == (
        30.0, 8, 128, (112, 112), 512, "r21d.npy")
    assert R21D.mean == (0.43216, 0.394666, 0.37645) and R21D.std == (0.22803, 0.22145, 0.216989)
    assert (S3D.fps, S3D.frames, S3D.crop, S3D.mean, S3D.std, S3D.output_dim, S3D.member) == (
        16.0, 16, (224, 224), None, None, 1024, "s3d.npy")
    assert (S3D.frame_choice, S3D.size_rule, S3D.scaler, S3D.tail, S3D.precision) == (
        "fps_filter", "truncate", "swscale_bilinear", "zero_pad", "fp32")
    embedding = S3D.with_options(output="embedding", precision="bf16")
    for spec in (R21D, S3D, embedding, R21D_IG65M):
        text = json.dumps(spec.to_json())
        assert BackboneSpec.from_json(json.loads(text)) == spec
        assert "family" not in spec.to_json()  # meta.json says the architecture in words
    # the architecture is a field of the recipe, and it is what features.weights builds
    assert (R21D.family, R21D_IG65M.family, S3D.family) == ("r2plus1d_34", "r2plus1d_34", "s3dg")
    with pytest.raises(ValueError, match="family must be one of"):
        BackboneSpec.from_json({**S3D.to_json(), "family": "i3d"})
    assert (embedding.output_dim, embedding.precision, embedding.recipe) == (512, "bf16", "released")
    assert get_spec("s3d") is S3D and get_spec("r21d", "paper") is R21D
    with pytest.raises(ValueError, match="unknown backbone"):
        get_spec("i3d")
    with pytest.raises(ValueError, match="unknown recipe s3d=paper"):
        get_spec("s3d", "paper")
    with pytest.raises(ValueError, match="precision"):
        S3D.with_options(precision="fp16")


def test_released_s3d_geometry_is_the_extractors_arithmetic():
    # int(w * 224 / h), scaled up when smaller; crop at int((W - 224) / 2)
    assert resized_size(480, 360, S3D) == (298, 224) and crop_offsets(298, 224, S3D) == (0, 37)
    assert resized_size(176, 144, S3D) == (273, 224) and resized_size(360, 640, S3D) == (224, 398)
    assert resized_size(3840, 2160, S3D) == (398, 224) and crop_offsets(224, 398, S3D) == (87, 0)
    assert resized_size(480, 360, R21D) == (171, 128)  # the paper recipe rounds


def test_ig65m_port_recipe_is_its_tools_arithmetic():
    spec = get_spec("r21d", "ig65m")
    assert spec is R21D_IG65M and (spec.frames, spec.crop, spec.frame_choice, spec.tail) == (32, None, "native", "drop")
    # F.interpolate(scale_factor=128 / 360): floor(480 * 0.3556) = 170, no crop
    assert resized_size(480, 360, spec) == (170, 128) and resized_size(1920, 1080, spec) == (227, 128)
    assert native_rows(420, spec) == 13 and native_rows(31, spec) == 0  # a last partial clip is dropped
    with pytest.raises(ValueError, match="fps 0"):
        BackboneSpec.from_json({**R21D_IG65M.to_json(), "fps": 30.0})


def test_fps_filter_rounding_and_tail_rule():
    # pts rounded half away from zero to 1/16 s ticks
    assert [fps_tick(t, 16) for t in (0.0, 1 / 32 - 1e-6, 1 / 32, 0.999, -1 / 32)] == [0, 0, 1, 16, -1]
    assert fps_filter_ticks(0.0, 4.004, 16) == (0, 64)  # 120 frames at 29.97 fps: 64 frames
    assert fps_filter_ticks(0.04, 6.6, 16) == (1, 105)  # a late first frame starts at tick 1
    assert fps_filter_rows(64, S3D) == 4 and fps_filter_rows(65, S3D) == 5  # ceil: the last chunk padded
    assert fps_filter_rows(15, S3D) == 0  # under one chunk: too short


def test_spec_module_imports_without_torch():
    code = "import sys, features, shards.feature_spec; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_windows_short_video_pads_tail_with_last_frame():
    (r21d,) = window_frame_times(0.4, R21D)
    assert r21d == pytest.approx([i / 30 for i in range(8)])  # 8 frames fit in 0.4 s
    (short,) = window_frame_times(0.2, R21D)
    assert short[:6] == pytest.approx([i / 30 for i in range(6)]) and short[6:] == [short[5]] * 2


def test_windows_whole_seconds_and_rounding_noise():
    assert num_windows(0.0) == 0 and window_frame_times(0.0, R21D) == []
    assert num_windows(1.0) == 1 and num_windows(1.0004) == 1 and num_windows(1.01) == 2
    (r21d,) = window_frame_times(1.0, R21D)
    assert r21d == pytest.approx([i / 30 for i in range(8)])
    with pytest.raises(ValueError):
        num_windows(-1.0)
    with pytest.raises(ValueError):
        num_windows(float("nan"))


def test_windows_partial_last_second():
    r21d = window_frame_times(2.5, R21D)
    assert len(r21d) == 3 and [w[0] for w in r21d] == [0.0, 1.0, 2.0]
    assert r21d[2] == pytest.approx([2 + i / 30 for i in range(8)])
    for k, times in enumerate(r21d):
        assert len(times) == R21D.frames and times == sorted(times)
        assert k <= times[0] and times[-1] < min(k + 1, 2.5)


# --- architectures ----------------------------------------------------------------

def test_r21d_has_caffe2_widths_eps_and_real_key_names(r21d_state):
    model = random_backbone("r21d", seed=0)
    shapes = {k: tuple(v.shape) for k, v in r21d_state.items()}
    assert shapes["stem.0.weight"] == (45, 3, 1, 7, 7) and shapes["stem.3.weight"] == (64, 45, 3, 1, 1)
    assert shapes["layer2.0.conv2.0.0.weight"] == (288, 128, 1, 3, 3)
    assert shapes["layer3.0.conv2.0.3.weight"] == (256, 576, 3, 1, 1)
    assert shapes["layer4.0.conv2.0.0.weight"] == (1152, 512, 1, 3, 3)
    assert shapes["layer4.0.downsample.0.weight"] == (512, 256, 1, 1, 1)
    assert shapes["fc.weight"] == (359, 512)
    assert all(m.eps == 1e-3 for m in model.modules() if isinstance(m, torch.nn.BatchNorm3d))
    assert sum(p.numel() for p in model.parameters()) == 63_676_142


def test_s3d_has_mil_nce_key_names(s3d_state):
    shapes = {k: tuple(v.shape) for k, v in s3d_state.items()}
    assert shapes["conv1.conv1.weight"] == (64, 24, 2, 4, 4)
    assert shapes["conv_2c.conv2.weight"] == (192, 192, 3, 1, 1)
    assert shapes["gating.fc.weight"] == (192, 192)
    assert shapes["mixed_4b.conv_b1_b.bn2.running_var"] == (208,)
    assert shapes["mixed_5c.gating_b0.fc.weight"] == (384, 384)
    assert shapes["fc.weight"] == (512, 1024)
    model = random_backbone("s3d", seed=0)
    assert sum(p.numel() for p in model.parameters()) == 9_670_800


@torch.no_grad()
def test_r21d_feature_shapes():
    model = random_backbone("r21d", seed=0)
    assert model.features(torch.randn(2, 3, 8, 32, 32)).shape == (2, 512)
    assert model.features(torch.randn(1, 3, 8, 112, 112)).shape == (1, 512)  # the real input


@torch.no_grad()
def test_s3d_feature_shapes_one_row_per_second_chunk():
    model = random_backbone("s3d", seed=0)
    # One real chunk (16 frames at 224x224) ends as a 2x7x7 mixed_5c map, pooled to one row.
    chunk = torch.rand(1, 3, 16, 224, 224)
    assert model.mixed_5c_map(chunk).shape == (1, 1024, 2, 7, 7)
    small = torch.rand(2, 3, 16, 64, 64)
    pooled = model.features_mixed_5c(small)
    assert pooled.shape == (2, 1024) and torch.equal(model.features(small), pooled)
    assert torch.allclose(model.embed(small), model.fc(pooled), atol=1e-6)
    with pytest.raises(ValueError, match="even"):
        model.features(torch.rand(1, 3, 15, 64, 64))


def test_random_backbone_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = random_backbone("s3d", seed=5)
    assert torch.equal(torch.rand(3), expected)
    b, c = random_backbone("s3d", seed=5), random_backbone("s3d", seed=6)
    assert torch.equal(a.conv1.conv1.weight, b.conv1.conv1.weight)
    assert not torch.equal(a.conv1.conv1.weight, c.conv1.conv1.weight)
    assert not a.training and not any(p.requires_grad for p in a.parameters())


# --- loading ----------------------------------------------------------------------

@torch.no_grad()
def test_r21d_loads_bare_state_dict_and_reports_sha256(tmp_path, r21d_state):
    path = _save(r21d_state, tmp_path / "r2plus1d_34_clip8_ig65m_from_scratch.pth")
    model, sha = load_backbone("r21d", path, "cpu")
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    assert not model.training and _same_weights(model, r21d_state)
    assert model.features(torch.randn(1, 3, 8, 32, 32)).shape == (1, 512)


def test_r21d_wrapped_prefixed_other_head(tmp_path, r21d_state):
    state = {f"module.{k}": v for k, v in r21d_state.items() if not k.startswith("fc.")}
    state["module.fc.weight"], state["module.fc.bias"] = torch.randn(487, 512), torch.randn(487)
    model, _ = load_backbone("r21d", _save({"state_dict": state, "epoch": 3}, tmp_path / "ck.pth"))
    assert model.fc.out_features == 487
    assert torch.equal(model.layer4[0].conv2[0][0].weight, r21d_state["layer4.0.conv2.0.0.weight"])


def test_r21d_torchvision_widths_are_refused_by_shape(tmp_path, r21d_state):
    # A plain torchvision R(2+1)D-34 has mid-width 230 where the IG65M file has 288.
    state = dict(r21d_state)
    state["layer2.0.conv2.0.0.weight"] = torch.randn(230, 128, 1, 3, 3)
    with pytest.raises(WeightsError, match=r"wrong shape.*layer2\.0\.conv2\.0\.0\.weight \(230"):
        load_backbone("r21d", _save(state, tmp_path / "tv.pth"))


@pytest.mark.parametrize("layout", ["bare", "state_dict", "model", "module_prefix", "no_bn_counters", "legacy"])
def test_s3d_checkpoint_layouts_load(tmp_path, s3d_state, layout):
    state = s3d_state
    if layout == "module_prefix":
        state = {f"module.{k}": v for k, v in state.items()}
    if layout == "no_bn_counters":
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    obj = {layout: state} if layout in ("state_dict", "model") else state
    path = tmp_path / "s3d_howto100m.pth"
    # The public files date from 2019, before torch 1.6 made the zip format the default.
    torch.save(obj, path, _use_new_zipfile_serialization=(layout != "legacy"))
    model, _ = load_backbone("s3d", path)
    assert _same_weights(model, s3d_state)
    assert not any(k.startswith("text_module") for k in model.state_dict())


def test_missing_key_is_one_clear_error(tmp_path, s3d_state):
    state = {k: v for k, v in s3d_state.items() if not k.startswith("mixed_5c.gating_b0.")}
    path = _save(state, tmp_path / "cut.pth")
    with pytest.raises(WeightsError) as err:
        load_backbone("s3d", path)
    message = str(err.value)
    assert str(path) in message and "missing 2 key(s)" in message
    assert "mixed_5c.gating_b0.fc.bias" in message and "unexpected" not in message


def test_unexpected_key_is_one_clear_error(tmp_path, s3d_state):
    state = dict(s3d_state, **{"mixed_6a.conv1.weight": torch.zeros(1)})
    path = _save(state, tmp_path / "extra.pth")
    with pytest.raises(WeightsError, match=r"unexpected 1 key\(s\): mixed_6a\.conv1\.weight") as err:
        load_backbone("s3d", path)
    assert str(path) in str(err.value)


def test_wrong_backbone_file_names_both_sides(tmp_path, s3d_state):
    with pytest.raises(WeightsError, match=r"r21d weights .* missing \d+ key\(s\): stem\.0\.weight.*unexpected \d+ key\(s\): conv1\.conv1\.weight"):
        load_backbone("r21d", _save(s3d_state, tmp_path / "s3d.pth"))


def test_pickled_module_is_refused_by_weights_only(tmp_path):
    path = _save(torch.nn.Linear(2, 2), tmp_path / "module.pth")
    with pytest.raises(WeightsError, match=r"pickled Python objects.*torch\.nn\.modules\.linear\.Linear"):
        load_backbone("s3d", path)


def test_missing_unreadable_and_unknown(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        load_backbone("s3d", tmp_path / "absent.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(WeightsError, match="not a readable PyTorch checkpoint"):
        load_backbone("s3d", junk)
    with pytest.raises(WeightsError, match="no state dict"):
        load_backbone("s3d", _save({"epoch": torch.tensor(1), "notes": {}}, tmp_path / "empty.pth"))
    with pytest.raises(ValueError, match="unknown backbone"):
        load_backbone("c3d", junk)


def test_random_s3d_rows_survive_float16():
    """Smoke-run rows (random weights) must not vanish when stored as float16."""
    model = random_backbone("s3d", seed=0)
    with torch.no_grad():
        rows = model.features(torch.rand(2, 3, 16, 64, 64))
    assert (rows.half() != 0).float().mean() > 0.5
