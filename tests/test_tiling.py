"""utils.tiling: window positions, the slide overlap average, whole-image padding, flip and scale TTA, memory.

Toy predictors are numpy functions of their input (and of the position inside the window), so every
expected value is computed by hand or by an independent numpy loop; no Keras is loaded.
"""
import tracemalloc

import numpy as np
import pytest

from data import Preprocessing  # noqa: E402  (data imports keras; the dataclass is all we use)
from Models import SizeRule
from utils.errors import UserError
from utils.image import LETTERBOX_FILL
from utils.inference import Predictor
from utils.tiling import check_stride, parse_scales, predict_image, window_starts

PREP = Preprocessing(32, 32, "divide", 1, 255, "bgr")


# === Toy predictors ===

def local_x_predictor(window, n_classes=2, rule=None, calls=None):
    """Class 0: the column inside the window; class 1: the input's channel 0 (x / 255 of the pixel)."""
    def run(batch):
        if calls is not None:
            calls.append(batch.shape)
        out = np.zeros(batch.shape[:3] + (n_classes,), np.float32)
        out[..., 0] = np.arange(batch.shape[2], dtype=np.float32)[None, None, :]
        out[..., 1] = batch[..., 0]
        return out

    def rebuild(height, width):
        return local_x_predictor((height, width), n_classes, calls=calls)
    return Predictor(run, window, n_classes, "toy", size_rule=rule, rebuild=rebuild if rule else None)


def pointwise_predictor(window, rule=None, sizes=None):
    """A flip-symmetric model: each output pixel is a function of its input pixel only."""
    def run(batch):
        if sizes is not None:
            sizes.append(batch.shape[1:3])
        return np.stack([batch[..., 0] * 2 + batch[..., 1], batch[..., 2] ** 2], axis=-1)

    def rebuild(height, width):
        return pointwise_predictor((height, width), sizes=sizes)
    return Predictor(run, window, 2, "toy", size_rule=rule, rebuild=rebuild if rule else None)


def coded_image(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# === Window positions ===

@pytest.mark.parametrize("length, window, stride, expected", [
    (5, 8, 3, [0]),              # smaller than the window: one (padded) window
    (8, 8, 3, [0]),              # exactly the window
    (12, 4, 4, [0, 4, 8]),       # an exact multiple: no extra window
    (12, 4, 3, [0, 3, 6, 8]),    # not a multiple: the last one flush with the border
    (10, 4, 2, [0, 2, 4, 6]),
    (100, 64, 43, [0, 36]),
    (9, 4, 1, [0, 1, 2, 3, 4, 5]),
])
def test_window_starts_table(length, window, stride, expected):
    assert window_starts(length, window, stride) == expected


def test_stride_and_scales_checks():
    assert check_stride(None, (64, 30)) == (43, 20)
    assert check_stride(30, (64, 30)) == (30, 30)
    for bad in (0, 31, -2):
        with pytest.raises(UserError, match=f"--stride {bad}: must be in 1..30"):
            check_stride(bad, (64, 30))
    assert parse_scales("0.75, 1.0,1.25") == (0.75, 1.0, 1.25)
    for bad, fragment in (("1.0,0", "positive"), ("-1", "positive"), ("1,x", "'x' is not a number"),
                          ("nan", "positive")):
        with pytest.raises(UserError, match=fragment):
            parse_scales(bad)


# === slide ===

def test_slide_overlap_average_by_hand():
    """Width 5, window 3, stride 2: windows at columns 0 and 2; column 2 is column 2 of the first and
    column 0 of the second, so its class-0 value is (2 + 0) / 2."""
    image = np.zeros((3, 5, 3), np.uint8)
    probs = predict_image(image, local_x_predictor((3, 3)), PREP, "slide", stride=2)
    np.testing.assert_array_equal(probs[0, :, 0], [0, 1, 1, 1, 2])
    assert probs.shape == (3, 5, 2) and probs.dtype == np.float32


def slide_reference(image, window, stride):
    """Every window cut out, predicted by the toy formula and added into a count-map average."""
    height, width = image.shape[:2]
    wh, ww = window
    padded = np.full((max(height, wh), max(width, ww), 3), LETTERBOX_FILL, np.uint8)
    padded[:height, :width] = image
    ph, pw = padded.shape[:2]
    acc, count = np.zeros((ph, pw, 2)), np.zeros((ph, pw))

    def starts(length, size):
        return sorted(set(range(0, length - size + 1, stride)) | {max(0, length - size)})
    for top in starts(ph, wh):
        for left in starts(pw, ww):
            crop = padded[top:top + wh, left:left + ww].astype(np.float64) / 255
            acc[top:top + wh, left:left + ww, 0] += np.arange(ww)[None, :]
            acc[top:top + wh, left:left + ww, 1] += crop[..., 0]
            count[top:top + wh, left:left + ww] += 1
    return (acc / count[..., None])[:height, :width]


@pytest.mark.parametrize("size, window, stride, batch_size", [
    ((37, 53), (16, 16), 11, 4),   # not a multiple of the stride
    ((10, 7), (16, 12), 8, 4),     # smaller than the window both ways: padded, cut back
    ((12, 40), (16, 16), 16, 3),   # shorter than the window in height only; stride = window
    ((48, 48), (16, 16), 16, 5),   # exact tiling
])
def test_slide_matches_numpy_reference(size, window, stride, batch_size):
    image = coded_image(*size)
    calls = []
    probs = predict_image(image, local_x_predictor(window, calls=calls), PREP, "slide", stride=stride,
                          batch_size=batch_size)
    assert probs.shape == size + (2,)
    np.testing.assert_allclose(probs, slide_reference(image, window, stride), rtol=1e-6, atol=1e-6)
    assert all(shape[0] <= batch_size and shape[1:3] == window for shape in calls)


def test_slide_default_stride_is_two_thirds_of_the_window():
    image = coded_image(40, 70)
    default = predict_image(image, local_x_predictor((24, 24)), PREP, "slide")
    np.testing.assert_allclose(default, slide_reference(image, (24, 24), 16), rtol=1e-6, atol=1e-6)


def test_slide_on_a_large_image_never_holds_the_stack_of_windows():
    """3000x2000, 128-pixel windows at stride 85: ~800 windows, 158 MB as one float32 stack; the
    accumulator is 48 MB. The bound leaves 10 MB for one batch and bookkeeping."""
    image = np.full((3000, 2000, 3), 100, np.uint8)
    predictor = pointwise_predictor((128, 128))
    tracemalloc.start()
    try:
        probs = predict_image(image, predictor, PREP, "slide", batch_size=4)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    accumulator = 3000 * 2000 * 2 * 4
    assert peak < accumulator + 10 * 2 ** 20, peak / 2 ** 20
    np.testing.assert_allclose(probs[1234, 567], [2 * 100 / 255 + 100 / 255, (100 / 255) ** 2], rtol=1e-6)


# === whole ===

@pytest.mark.parametrize("size, legal", [((37, 50), (40, 56)), ((5, 3), (16, 16)), ((32, 24), (32, 24))])
def test_whole_pads_to_the_rule_and_cuts_back(size, legal):
    image = coded_image(*size, seed=3)
    seen = []
    predictor = pointwise_predictor((16, 16), rule=SizeRule(8, minimum=16), sizes=seen)
    probs = predict_image(image, predictor, PREP, "whole")
    x = image.astype(np.float64) / 255
    expected = np.stack([x[..., 0] * 2 + x[..., 1], x[..., 2] ** 2], axis=-1)
    np.testing.assert_allclose(probs, expected, rtol=1e-6, atol=1e-7)
    assert seen == [legal]


def test_whole_pads_with_grey_bottom_right():
    image = np.zeros((10, 13, 3), np.uint8)
    probs = predict_image(image, local_x_predictor((8, 8), rule=SizeRule(8)), PREP, "whole")
    np.testing.assert_array_equal(probs[..., 0], np.tile(np.arange(13), (10, 1)))  # no left padding
    seen = {}

    def run(batch):
        seen["input"] = batch
        return np.zeros(batch.shape[:3] + (2,), np.float32)
    fixed = Predictor(run, (16, 16), 2, "toy")
    predict_image(image, fixed, PREP, "whole")
    assert seen["input"].shape == (1, 16, 16, 3)
    np.testing.assert_array_equal(seen["input"][0, :10, :13], 0)
    np.testing.assert_allclose(seen["input"][0, 10:], LETTERBOX_FILL / 255)
    np.testing.assert_allclose(seen["input"][0, :, 13:], LETTERBOX_FILL / 255)


def test_whole_on_a_fixed_size_model_too_small_is_one_line():
    fixed = pointwise_predictor((16, 16))
    fixed.fixed_reason = "m.onnx is a fixed-size onnx export (16x16)"
    with pytest.raises(UserError, match=r"m.onnx is a fixed-size onnx export \(16x16\): --inference_mode whole "
                                        r"cannot fit a 20x9 image in it; use --inference_mode slide"):
        predict_image(coded_image(20, 9), fixed, PREP, "whole")


def test_at_size_names_the_nearest_legal_sizes():
    predictor = pointwise_predictor((16, 16), rule=SizeRule(16, minimum=32))
    with pytest.raises(UserError, match="cannot take 40x16 inputs .*height 40: nearest legal 32/48; "
                                        "width 16: nearest legal 32"):
        predictor.at_size(40, 16)
    assert predictor.at_size(48, 32).input_size == (48, 32)
    assert predictor.at_size(48, 32) is predictor.at_size(48, 32)  # one model per size
    assert predictor.nearest_legal_size(40, 55) == (48, 48) and predictor.nearest_legal_size(39, 20) == (32, 32)


def test_at_size_keeps_a_bounded_number_of_rebuilt_sizes():
    from utils.inference import MAX_CACHED_SIZES
    built = []

    def rebuild(height, width):
        built.append((height, width))
        return Predictor(lambda batch: batch[..., :2], (height, width), 2, "toy")
    predictor = Predictor(lambda batch: batch[..., :2], (8, 8), 2, "toy", size_rule=SizeRule(8), rebuild=rebuild)
    sizes = [(8 * (i + 2), 8) for i in range(MAX_CACHED_SIZES + 1)]
    for size in sizes + sizes[-MAX_CACHED_SIZES:]:  # the last ones again: cached
        predictor.at_size(*size)
    assert built == sizes
    assert predictor.at_size(8, 8) is predictor
    predictor.at_size(*sizes[0])  # the oldest was dropped: built again
    assert built == sizes + [sizes[0]]


# === TTA ===

@pytest.mark.parametrize("mode", ["resize", "whole", "slide"])
def test_flip_on_a_flip_symmetric_model_changes_nothing(mode):
    image = coded_image(29, 45, seed=5)
    predictor = pointwise_predictor((16, 16), rule=SizeRule(8))
    plain = predict_image(image, predictor, PREP, mode, stride=10)
    flipped = predict_image(image, predictor, PREP, mode, stride=10, flip=True)
    np.testing.assert_allclose(flipped, plain, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("width", [16, 13])
def test_flip_on_an_asymmetric_model_is_the_average_of_both(width):
    """Class 0 is the column: x unflipped, width - 1 - x mirrored back; their mean is (width - 1) / 2."""
    image = coded_image(8, width)
    probs = predict_image(image, local_x_predictor((8, 8), rule=SizeRule(8)), PREP, "whole", flip=True)
    np.testing.assert_allclose(probs[..., 0], (width - 1) / 2)
    x = image[..., 0] / 255
    np.testing.assert_allclose(probs[..., 1], (x + x) / 2, rtol=1e-6)  # pointwise class: unchanged


def width_predictor(window, rule=None, sizes=None):
    """Class 0 = 1 / the input width: each scale's pass is told apart in the average."""
    def run(batch):
        if sizes is not None:
            sizes.append(batch.shape[1:3])
        out = np.zeros(batch.shape[:3] + (2,), np.float32)
        out[..., 0] = 1 / batch.shape[2]
        return out
    return Predictor(run, window, 2, "toy", size_rule=rule,
                     rebuild=(lambda h, w: width_predictor((h, w), sizes=sizes)) if rule else None)


def test_scales_average_whole_passes_at_each_image_scale():
    sizes = []
    image = coded_image(32, 64)
    probs = predict_image(image, width_predictor((32, 32), SizeRule(16), sizes), PREP, "whole", scales=(1.0, 0.5))
    assert sizes == [(32, 64), (16, 32)]
    np.testing.assert_allclose(probs[..., 0], (1 / 64 + 1 / 32) / 2, rtol=1e-6)
    assert probs.shape == (32, 64, 2)


def test_scales_in_resize_mode_choose_the_nearest_legal_network_size():
    sizes = []
    image = coded_image(50, 70)
    probs = predict_image(image, width_predictor((32, 32), SizeRule(8), sizes), PREP, "resize",
                          scales=(1.0, 1.25, 0.6, 0.7))
    # 0.6 * 32 = 19.2 -> 19: 16 is nearer than 24; 0.7 * 32 = 22.4 -> 22: 24 is nearer.
    assert sizes == [(32, 32), (40, 40), (16, 16), (24, 24)]
    np.testing.assert_allclose(probs[..., 0], (1 / 32 + 1 / 40 + 1 / 16 + 1 / 24) / 4, rtol=1e-6)
    assert probs.shape == (50, 70, 2)


def test_resize_mode_is_the_plain_resize_and_restore():
    """The network input is the image stretched to 32x32 and normalised; resize_op 3 stretches too."""
    import cv2
    image = coded_image(20, 44)
    for op in (1, 3):
        prep = Preprocessing(32, 32, "divide", op, 255, "bgr")
        probs = predict_image(image, pointwise_predictor((32, 32)), prep, "resize")
        x = cv2.resize(image, (32, 32), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255
        net = np.stack([x[..., 0] * 2 + x[..., 1], x[..., 2] ** 2], axis=-1)
        np.testing.assert_allclose(probs, cv2.resize(net, (44, 20), interpolation=cv2.INTER_LINEAR), rtol=1e-6)


def test_tiling_loads_without_keras():
    """train.py's and tools' callers may import it before (or without) a backend."""
    from conftest import run_without
    result = run_without("import utils.tiling")
    assert result.returncode == 0, result.stderr
