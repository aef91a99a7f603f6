"""The shipped feature extractor, the perceptual distance, and foreign weights (LPIPS, FID Inception)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pyinverse.data import digits, photo_patches
from pyinverse.metrics import (FeatureExtractor, FeatureNet, FIDInceptionV3, LPIPSAlex, fid_inception_v3,
                               load_feature_net, load_torch_weights, perceptual_distance, save_feature_net,
                               validity)
from pyinverse.metrics.features import SHIPPED_WEIGHTS
from pyinverse.physics import by_name
from tests.reference import fid_inception_reference, lpips_alex_reference, unit_feature_distance_reference


@pytest.fixture(scope="module")
def extractor() -> FeatureExtractor:
    return FeatureExtractor()


@pytest.fixture(scope="module")
def held_out_patches() -> torch.Tensor:
    return torch.from_numpy(photo_patches("held_out", size=32, stride=32)[:24])


# --- the shipped network ---------------------------------------------------------------------

def test_shipped_weights_are_small_complete_and_documented(extractor):
    assert SHIPPED_WEIGHTS.stat().st_size < 3e6
    meta = extractor.metadata
    assert meta["format"] == "pyinverse.FeatureNet/1"
    assert "train_feature_extractor.py" in meta["command"]
    classes = json.loads(meta["classes"])
    assert len(classes) == extractor.net.num_classes == len(extractor.class_names)
    assert extractor.feature_dim == 128


def test_shipped_network_recognises_digits(extractor):
    # A trained network, not random weights: digits are classified far above chance (1/27).
    images, labels = digits(return_labels=True)
    rng = np.random.default_rng(0)
    pick = rng.choice(len(images), 300, replace=False)
    with torch.no_grad():
        logits, _ = extractor.classify(images[pick])
    names = np.array(extractor.class_names)
    predicted = names[logits.argmax(1).numpy()]
    accuracy = np.mean(predicted == np.array([f"digit_{d}" for d in labels[pick]]))
    print(f"digit accuracy {accuracy:.3f}")
    assert accuracy > 0.85


def test_shipped_network_names_degradations_of_unseen_photos(extractor, held_out_patches):
    # The second head was trained on crops of other photos; here: held-out patches, each degraded.
    x = held_out_patches
    generator = torch.Generator().manual_seed(0)
    degraded = {
        "clean": x,
        "blur": by_name("blur:1.5").A(x),
        "noise": (x + 0.1 * torch.randn(x.shape, generator=generator)).clamp(0, 1),
        "pixelate": F.interpolate(F.avg_pool2d(x, 4), size=(32, 32), mode="bilinear", align_corners=False),
    }
    names = extractor.degradation_names
    assert names[:4] == ["clean", "blur", "noise", "pixelate"]
    correct = 0
    with torch.no_grad():
        for name, images in degraded.items():
            _, logits = extractor.classify(images)
            correct += int((logits.argmax(1) == names.index(name)).sum())
    accuracy = correct / (len(degraded) * len(x))
    print(f"degradation accuracy on held-out patches {accuracy:.3f}")
    assert accuracy > 0.5  # chance: 0.2 (measured 0.60 with the shipped weights)


def test_extractor_shapes_types_channels_and_resizing(extractor, held_out_patches):
    images = held_out_patches[:6]
    features = extractor(images)
    assert features.shape == (6, 128) and features.dtype == torch.float32
    assert torch.equal(features, extractor(images))  # deterministic
    assert np.allclose(extractor(images.numpy()), features.numpy())  # numpy in, numpy out
    assert isinstance(extractor(images.numpy()), np.ndarray)
    gray = images.mean(dim=1, keepdim=True)
    assert torch.allclose(extractor(gray), extractor(gray.expand(-1, 3, -1, -1)))
    # larger images are resized (antialiased) to the native 32x32
    large = F.interpolate(images, scale_factor=2, mode="nearest")
    manual = F.interpolate(large, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    assert torch.allclose(extractor(large), extractor.net(manual), atol=1e-6)
    single_pixel_batch = torch.rand(1, 3, 1, 1)
    assert extractor(single_pixel_batch).shape == (1, 128)


def test_extractor_rejects_bad_inputs(extractor):
    with pytest.raises(ValueError, match="1 or 3 channels"):
        extractor(torch.rand(2, 2, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        extractor(torch.rand(3, 32, 32))
    with pytest.raises(TypeError, match="torch tensor or a numpy array"):
        extractor([[1.0]])


# --- perceptual distance ---------------------------------------------------------------------

def test_perceptual_distance_types_follow_the_operands(extractor, held_out_patches):
    x, y = held_out_patches[:3], held_out_patches[3:6]
    per_image = extractor.perceptual_distance(x, y)
    mean = extractor.perceptual_distance(x.numpy(), y.numpy(), reduction="mean")
    assert isinstance(mean, float) and mean == pytest.approx(float(per_image.mean()), rel=1e-6)
    assert isinstance(extractor.perceptual_distance(x.numpy(), y.numpy()), np.ndarray)
    for a, b in ((x.numpy(), y), (x, y.numpy())):
        got = extractor.perceptual_distance(a, b)
        assert isinstance(got, torch.Tensor) and torch.allclose(got, per_image)
    with pytest.raises(ValueError, match="'reduction' must be 'none' or 'mean'"):
        extractor.perceptual_distance(x, y, reduction="sum")


def test_perceptual_distance_matches_float64_reference(extractor, held_out_patches):
    x = held_out_patches[:5]
    y = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    got = extractor.perceptual_distance(x, y)
    with torch.no_grad():
        maps_x = [m.numpy() for m in extractor.net.stage_outputs(x)]
        maps_y = [m.numpy() for m in extractor.net.stage_outputs(y)]
    expected = unit_feature_distance_reference(maps_x, maps_y)
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-4)
    assert torch.allclose(perceptual_distance(x, y), got)
    assert torch.allclose(extractor.perceptual_distance(y, x), got, rtol=1e-5)
    assert torch.equal(extractor.perceptual_distance(x, x), torch.zeros(5))
    assert extractor.perceptual_distance(x, y, reduction="mean") == pytest.approx(float(got.mean()), rel=1e-6)


@pytest.mark.parametrize("degradation", ["noise", "blur", "gray"])
def test_perceptual_distance_grows_with_degradation(extractor, held_out_patches, degradation):
    x = held_out_patches
    generator = torch.Generator().manual_seed(2)
    distances = []
    for level in (0.02, 0.1, 0.3):
        if degradation == "noise":
            y = (x + level * torch.randn(x.shape, generator=generator)).clamp(0, 1)
        elif degradation == "blur":
            y = by_name(f"blur:{10 * level}").A(x)
        else:  # move part of the way to gray
            y = (1 - 3 * level) * x + 3 * level * x.mean(dim=1, keepdim=True) if level < 0.3 else \
                x.mean(dim=1, keepdim=True).expand_as(x)
        distances.append(float(extractor.perceptual_distance(x, y).mean()))
    print(degradation, distances)
    assert distances[0] < distances[1] < distances[2]


def test_perceptual_distance_small_images_are_upsampled_and_gradients_flow(extractor):
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    y = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(4), requires_grad=True)
    got = extractor.perceptual_distance(x, y)
    def up(t):
        return F.interpolate(t.expand(-1, 3, -1, -1), size=(32, 32), mode="bilinear", align_corners=False)

    assert torch.allclose(got, extractor.perceptual_distance(up(x), up(y)), atol=1e-6)
    got.sum().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0
    non_square = extractor.perceptual_distance(torch.rand(1, 3, 8, 16), torch.rand(1, 3, 8, 16))
    assert non_square.shape == (1,)
    with pytest.raises(ValueError, match="same shape"):
        extractor.perceptual_distance(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9))


def test_validity_default_perceptual_uses_the_shipped_network(held_out_patches):
    op = by_name("downsample:2")
    x = held_out_patches[:3]
    y = op.A(x)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    samples = torch.stack([x, (x + 0.1 * noise).clamp(0, 1)])
    result = validity(op, y, samples, metrics=("perceptual",))
    np.testing.assert_allclose(result["perceptual_per_sample"][0], 0.0, atol=1e-7)
    expected = perceptual_distance(op.A(samples[1]), y).numpy()
    np.testing.assert_allclose(result["perceptual_per_sample"][1], expected, rtol=1e-6)


# --- saving and loading our own weights ------------------------------------------------------

def test_save_and_load_round_trip_is_atomic_and_refuses_overwrite(tmp_path):
    torch.manual_seed(0)
    net = FeatureNet(widths=(4, 8, 8, 16), num_classes=3).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics must survive the round trip
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    path = save_feature_net(net, tmp_path / "net.safetensors", {"classes": json.dumps(["a", "b", "c"])})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.safetensors"]  # no temp file left
    loaded, meta = load_feature_net(path)
    assert meta["widths"] == "4,8,8,16" and json.loads(meta["classes"]) == ["a", "b", "c"]
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(loaded(x), net(x))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_feature_net(net, path)
    save_feature_net(FeatureNet(widths=(4, 8, 8, 16)), path, overwrite=True)
    assert load_feature_net(path)[0].num_classes == 0


def test_loading_bad_feature_files_gives_clear_errors(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(FileNotFoundError, match="load_feature_net"):
        load_feature_net(tmp_path / "missing.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01not a safetensors file" * 10)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_feature_net(garbage)
    net = FeatureNet(widths=(4, 8, 8, 16))
    tensors = {k: v.contiguous() for k, v in net.state_dict().items()}
    meta = {"format": "pyinverse.FeatureNet/1", "widths": "4,8,8,16", "num_classes": "0",
            "num_degradations": "0"}
    cases = {
        "format": ({**tensors}, {**meta, "format": "something else"}, "format"),
        "missing": ({k: v for k, v in tensors.items() if k != "stages.0.0.weight"}, meta, "missing 1 key"),
        "shape": ({**tensors, "stages.0.1.bias": torch.zeros(5)}, meta, r"shape \(5,\)"),
        "nan": ({**tensors, "stages.1.1.weight": torch.full((8,), float("nan"))}, meta, "non-finite"),
        "extra": ({**tensors, "head.weight": torch.zeros(2)}, meta, "unexpected 1 key"),
        "widths": (tensors, {**meta, "widths": "4,8"}, r"unexpected \d+ key"),
        "negative width": (tensors, {**meta, "widths": "4,8,8,-1"}, "no valid 'widths'"),
        "huge width": (tensors, {**meta, "widths": "4,8,8,100000000"}, "no valid 'widths'"),
        "negative classes": (tensors, {**meta, "num_classes": "-3"}, "no valid 'num_classes'"),
        "class names": (tensors, {**meta, "classes": "not json"}, "invalid 'classes'"),
        "class list": (tensors, {**meta, "degradations": "[1, 2]"}, "invalid 'degradations'"),
    }
    for name, (state, metadata, message) in cases.items():
        path = tmp_path / f"{name}.safetensors"
        save_file(state, str(path), metadata=metadata)
        with pytest.raises(ValueError, match=message):
            load_feature_net(path)


# --- LPIPS from local files ------------------------------------------------------------------

def _random_alexnet_files(tmp_path, seed: int):
    """A torchvision-style AlexNet state dict (with classifier) and lpips-style heads, saved."""
    generator = torch.Generator().manual_seed(seed)
    shapes = {0: (64, 3, 11, 11), 3: (192, 64, 5, 5), 6: (384, 192, 3, 3), 8: (256, 384, 3, 3),
              10: (256, 256, 3, 3)}
    backbone = {}
    for index, shape in shapes.items():
        fan_in = shape[1] * shape[2] * shape[3]
        backbone[f"features.{index}.weight"] = torch.randn(shape, generator=generator) * (2 / fan_in) ** 0.5
        backbone[f"features.{index}.bias"] = 0.1 * torch.randn(shape[0], generator=generator)
    backbone["classifier.1.weight"] = torch.randn(10, 9216, generator=generator)
    backbone["classifier.1.bias"] = torch.randn(10, generator=generator)
    heads = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=generator)
             for k, c in enumerate((64, 192, 384, 256, 256))}
    torch.save(backbone, tmp_path / "alexnet.pth")
    torch.save(heads, tmp_path / "alex_heads.pth")
    return backbone, heads


def test_lpips_alex_loads_local_files_and_matches_reference(tmp_path):
    backbone, heads = _random_alexnet_files(tmp_path, seed=0)
    lpips = LPIPSAlex.from_files(tmp_path / "alexnet.pth", tmp_path / "alex_heads.pth")
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, 64, 64, generator=generator)
    y = (x + 0.2 * torch.randn(x.shape, generator=generator)).clamp(0, 1)
    got = lpips(x, y)
    expected = lpips_alex_reference(x.numpy(), y.numpy(), backbone, heads)
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-4)
    assert torch.allclose(lpips(x, x), torch.zeros(3))
    # without heads: every channel weighs 1 (LPIPS's "baseline")
    baseline = LPIPSAlex.from_files(tmp_path / "alexnet.pth", None)
    ones = {k: torch.ones_like(v) for k, v in heads.items()}
    np.testing.assert_allclose(baseline(x, y).detach().numpy(),
                               lpips_alex_reference(x.numpy(), y.numpy(), backbone, ones), rtol=1e-4)
    gray_x, gray_y = x.mean(dim=1, keepdim=True), y.mean(dim=1, keepdim=True)
    assert torch.allclose(lpips(gray_x, gray_y),
                          lpips(gray_x.expand(-1, 3, -1, -1), gray_y.expand(-1, 3, -1, -1)))


def test_lpips_alex_rejects_mismatched_files(tmp_path):
    backbone, heads = _random_alexnet_files(tmp_path, seed=2)
    bad_heads = dict(heads)
    bad_heads["lin2.model.1.weight"] = torch.rand(1, 256, 1, 1)  # vgg's shape, not alex's
    torch.save(bad_heads, tmp_path / "vgg_like.pth")
    with pytest.raises(ValueError, match=r"2.weight: shape \(1, 256, 1, 1\), expected \(1, 384, 1, 1\)"):
        LPIPSAlex.from_files(tmp_path / "alexnet.pth", tmp_path / "vgg_like.pth")
    torch.save({**heads, "0.weight": heads["lin0.model.1.weight"]}, tmp_path / "twice.pth")
    with pytest.raises(ValueError, match="holds head '0.weight' twice"):
        LPIPSAlex.from_files(tmp_path / "alexnet.pth", tmp_path / "twice.pth")
    torch.save({**backbone, "extra.weight": torch.zeros(1)}, tmp_path / "not_alexnet.pth")
    with pytest.raises(ValueError, match="not a torchvision AlexNet"):
        LPIPSAlex.from_files(tmp_path / "not_alexnet.pth", None)
    (tmp_path / "truncated.pth").write_bytes((tmp_path / "alexnet.pth").read_bytes()[:1000])
    with pytest.raises(ValueError, match="could not read"):
        LPIPSAlex.from_files(tmp_path / "truncated.pth", None)
    with pytest.raises(FileNotFoundError):
        LPIPSAlex.from_files(tmp_path / "nothing.pth", None)
    lpips = LPIPSAlex()
    with pytest.raises(ValueError, match="at least 31x31"):
        lpips(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))


# --- FID InceptionV3 from a local file -------------------------------------------------------

class _NotWeights:
    pass


def _random_fid_inception(seed=0):
    torch.manual_seed(seed)
    net = FIDInceptionV3()
    with torch.no_grad():  # random BatchNorm statistics, so eval-mode BN is exercised
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)
    return net


@pytest.mark.parametrize("channels,size", [(3, 40), (1, 311)])
def test_fid_inception_matches_an_independent_float64_forward(channels, size):
    """The whole network, resize and [-1, 1] mapping included, against a functional float64 reference
    written from pytorch-fid (padding-free average pools, Mixed_7c's max pool); gray images as RGB."""
    net = _random_fid_inception(seed=channels).double()
    images = torch.rand(2, channels, size, size, generator=torch.Generator().manual_seed(size), dtype=torch.float64)
    with torch.no_grad():
        got = net(images)
    expected = fid_inception_reference(images, net.state_dict())
    assert got.dtype == torch.float64 and got.shape == (2, 2048)
    assert expected.abs().max() > 0.1  # the features are not all zero after 40 ReLU layers
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12 * float(expected.abs().max()))


def test_fid_inception_round_trip_through_a_saved_state_dict(tmp_path):
    source = _random_fid_inception()
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "pt_inception.pth")  # like pytorch-fid's file: no BN counters
    loaded = fid_inception_v3(tmp_path / "pt_inception.pth")
    assert not any(p.requires_grad for p in loaded.parameters())
    source.resize_input = loaded.resize_input = False  # 80x80 inputs keep the test fast
    images = torch.rand(2, 3, 80, 80, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = source(images), loaded(images)
    assert got.shape == (2, 2048)
    assert torch.equal(got, expected)
    assert sum(p.numel() for p in loaded.parameters()) == 23_850_960  # torchvision Inception3(1008), no aux

    # a wrapped checkpoint and a rename hook go through the generic loader
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, tmp_path / "wrapped.pth")
    again = load_torch_weights(FIDInceptionV3(resize_input=False), tmp_path / "wrapped.pth",
                               rename=lambda k: k[len("module."):])
    with torch.no_grad():
        assert torch.equal(again(images), expected)


def test_fid_inception_rejects_bad_files(tmp_path):
    net = FIDInceptionV3()
    state = net.state_dict()
    wrong = {**state, "Mixed_7c.branch_pool.conv.weight": torch.zeros(192, 2048, 3, 3)}
    torch.save(wrong, tmp_path / "shape.pth")
    with pytest.raises(ValueError, match=r"fid_inception_v3: .*Mixed_7c.branch_pool.conv.weight: shape"):
        fid_inception_v3(tmp_path / "shape.pth")
    torch.save({k: v for k, v in state.items() if not k.startswith("Mixed_5b")}, tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="missing"):
        fid_inception_v3(tmp_path / "missing.pth")
    torch.save({"AuxLogits.fc.weight": torch.zeros(1008, 768), **state}, tmp_path / "aux.pth")
    with pytest.raises(ValueError, match="unexpected 1 key"):
        fid_inception_v3(tmp_path / "aux.pth")
    torch.save({"weights": _NotWeights()}, tmp_path / "pickled.pth")
    with pytest.raises(ValueError, match="weights_only=True"):
        fid_inception_v3(tmp_path / "pickled.pth")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="not a state dict"):
        fid_inception_v3(tmp_path / "list.pth")
    # Keys that are not strings (the LPIPS loaders split them, and failed with AttributeError)
    torch.save({0: torch.zeros(1), "features.0.weight": torch.zeros(1)}, tmp_path / "int_keys.pth")
    for load in (fid_inception_v3, lambda path: LPIPSAlex.from_files(path, None),
                 lambda path: LPIPSAlex().load_heads(path)):
        with pytest.raises(ValueError, match="not a state dict: 1 key.*not strings, e.g. 0"):
            load(tmp_path / "int_keys.pth")


def test_training_script_runs_and_refuses_to_overwrite(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "train_feature_extractor.py"
    spec = importlib.util.spec_from_file_location("train_feature_extractor", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "tiny.safetensors"
    threads = torch.get_num_threads()
    try:
        args = ["--steps", "20", "--batch-size", "4", "--validation-size", "16", "--out", str(out)]
        assert module.main(args) == 0
    finally:
        torch.set_num_threads(threads)
    net, meta = load_feature_net(out)
    assert net.num_classes == len(json.loads(meta["classes"])) and net.num_degradations == 5
    assert "--steps 20" in meta["command"]
    with pytest.raises(SystemExit):
        module.main(args)  # exists, no --overwrite
    assert "exists" in capsys.readouterr().err


def test_integer_images_are_refused_not_read_as_0_to_255(extractor):
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with pytest.raises(TypeError, match="divide 8-bit images by 255"):
        extractor(images)
    with pytest.raises(TypeError, match="float images"):
        perceptual_distance(images, images)
    floats = images / 255.0
    for call, name in ((lambda: LPIPSAlex()(floats, images), "LPIPSAlex: 'y'"),
                       (lambda: LPIPSAlex()(images.numpy(), floats.numpy()), "LPIPSAlex: 'x'"),
                       (lambda: FIDInceptionV3()(images), "FIDInceptionV3: 'images'")):
        with pytest.raises(TypeError, match=f"{name} must be float images in \\[0, 1\\], got .*uint8; divide 8-bit"):
            call()
