"""Any legal size from one set of weights: every registered model rebuilt at its own size gives exactly the
original's output, and rebuilt at another legal size it runs (utils.inference.rebuilt_model / at_size)."""
import numpy as np
import pytest

import Models
from utils.errors import UserError

pytestmark = pytest.mark.slow  # builds every model three times: a few minutes on 2 cores

# Every model at its default options, plus the option sets that change the graph's outputs or its rule.
CASES = [(name, {}) for name in Models.MODELS] + [
    ("pspnet", {"aux_branch": True}),          # two outputs: only the main head is rebuilt
    ("deeplab_v3+", {"downsample_factor": 8}),  # the size rule follows the option
]


def perturbed(model, seed):
    """Every weight moved off its initial value (BatchNorm statistics too), so a copy that skipped some
    weights, or a fresh initialisation, cannot give the same output."""
    rng = np.random.default_rng(seed)
    trainable = {id(v) for v in model.trainable_weights}
    model.set_weights([w * rng.uniform(0.5, 1.5, w.shape).astype(w.dtype) if id(v) in trainable
                       else w + rng.uniform(0.0, 0.2, w.shape).astype(w.dtype)
                       for v, w in zip(model.weights, model.get_weights())])
    return model


@pytest.mark.parametrize("name, options", CASES, ids=[f"{n}{'-' + str(o) if o else ''}" for n, o in CASES])
def test_rebuilt_model_matches_the_original_and_runs_at_another_size(name, options):
    import keras

    from utils.inference import keras_predictor, main_output_model, rebuilt_model
    keras.backend.clear_session()
    rule = Models.get_entry(name).size_rule(options)
    size = max(rule.smallest, 32)
    original = perturbed(main_output_model(Models.build_model(name, 3, size, size, **options)), seed=1)
    x = np.random.default_rng(2).random((2, size, size, 3), dtype=np.float32)
    expected = original.predict_on_batch(x)
    same = rebuilt_model(original, name, 3, size, size, options)
    assert same is not original
    np.testing.assert_array_equal(same.predict_on_batch(x), expected)

    predictor = keras_predictor(original, {"model_name": name, "n_classes": 3, "model_options": options})
    other = (size + rule.multiple, size + 2 * rule.multiple)
    bigger = predictor.at_size(*other)
    assert bigger is predictor.at_size(*other)  # cached: one model per size
    probs = bigger(np.random.default_rng(3).random((1, *other, 3), dtype=np.float32))
    assert probs.shape == (1, *other, 3)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-4)
    with pytest.raises(UserError, match=f"cannot take {size + 1}x{size} inputs"):
        predictor.at_size(size + 1, size)


def test_rebuild_with_the_wrong_architecture_is_one_line():
    import keras

    from utils.inference import rebuilt_model
    keras.backend.clear_session()
    model = Models.build_model("enet", 2, 32, 32)
    with pytest.raises(UserError, match="do not fit fcn8 .* cannot rebuild it at another size"):
        rebuilt_model(model, "fcn8", 2, 64, 64)
