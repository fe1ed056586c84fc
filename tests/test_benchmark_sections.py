"""tools/benchmark.py's overhead, pipeline-reference and slide sections: same batches, flags, one tiny run each."""
import os

import numpy as np
import pytest

from conftest import assert_one_line_error, run_script, write_dataset


# === The pipeline references make the toolkit's batches ===

def toolkit_batches(pairs, size, batch_size):
    from data import Preprocessing, SegmentationDataset
    dataset = SegmentationDataset(pairs, batch_size, Preprocessing(size, size), n_classes=2, shuffle=False, workers=1)
    return [dataset[i] for i in range(len(dataset))]


@pytest.fixture
def pairs(tmp_path):
    from data import pair_files
    base = write_dataset(str(tmp_path), n_train=5, size=(40, 48))
    return pair_files(os.path.join(base, "train_image"), os.path.join(base, "train_label"))


def test_naive_loop_makes_the_toolkits_batches(pairs):
    from tools.benchmark_sections import naive_batches
    ours, naive = toolkit_batches(pairs, 32, 2), list(naive_batches(pairs, 32, 2))
    assert [b[0].shape for b in naive] == [(2, 32, 32, 3), (2, 32, 32, 3), (1, 32, 32, 3)]
    for (images, labels), (ref_images, ref_labels) in zip(ours, naive):
        assert ref_images.dtype == np.float32 and ref_labels.dtype == np.int32
        np.testing.assert_allclose(images, ref_images, atol=1e-6)
        np.testing.assert_array_equal(labels, ref_labels)


def test_tfdata_reference_makes_the_same_batches(pairs):
    """tf.image.resize samples as cv2's bilinear does but skips the uint8 rounding: within 1 grey level."""
    from tools.benchmark_sections import naive_batches, tfdata_pipeline
    reference = [(x.numpy(), y.numpy()) for x, y in tfdata_pipeline(pairs, 32, 2)]
    naive = list(naive_batches(pairs, 32, 2))
    assert len(reference) == len(naive) == 3
    for (images, labels), (ref_images, ref_labels) in zip(naive, reference):
        assert ref_images.shape == images.shape and ref_labels.dtype == np.int32
        assert np.abs(images - ref_images).max() <= 1.0 / 255 + 1e-6
        np.testing.assert_array_equal(labels, ref_labels)


# === Flags ===

@pytest.mark.parametrize("args, fragments", [
    (["--sections", "overhead,speed"], ["--sections overhead,speed", "speed", "peak, pipeline"]),
    (["--skip", "gpu"], ["--skip gpu", "sections are"]),
    (["--overhead_ablations", "per_class,loss"], ["--overhead_ablations loss", "valid: all, per_class"]),
    (["--slide_sizes", "1000x"], ["--slide_sizes 1000x", "HEIGHTxWIDTH"]),
])
def test_bad_section_flags_are_one_line_errors(args, fragments):
    assert_one_line_error(run_script("tools/benchmark.py", *args, timeout=120), *fragments)


# === One tiny run of each measurement ===

@pytest.mark.slow
def test_overhead_times_both_sides_and_an_ablation(tmp_path):
    from tools.benchmark_sections import measure_overhead
    base = write_dataset(str(tmp_path), n_train=8, size=(32, 32))
    out = measure_overhead(base, model="unet", size=32, batch_size=4, epochs=2, ablations=["checkpoints"])
    for timing in (out["bare"], out["train"], out["ablations"]["checkpoints"]):
        assert timing["images"] == 8 and len(timing["epoch_s"]) == 1 and timing["epoch_s"][0] > 0
        assert timing["images_per_s"] == pytest.approx(8 / timing["epoch_s"][0])
    assert out["ratio"] == pytest.approx(out["train"]["images_per_s"] / out["bare"]["images_per_s"])


@pytest.mark.slow
def test_slide_and_whole_predict_in_a_subprocess():
    pytest.importorskip("utils.tiling")
    from tools.benchmark_sections import slide_run
    for mode in ("slide", "whole"):
        row = slide_run(40, 56, mode=mode, window=32, batch_size=2)
        assert row["seconds"] > 0 and row["peak_rss_mb"] > 50
        assert row["megapixels_per_s"] == pytest.approx(40 * 56 / 1e6 / row["seconds"])
