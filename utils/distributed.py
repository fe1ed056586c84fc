"""Data-parallel training: the strategy train.py builds for `--multi_gpus true`, the worker's place
in a TF_CONFIG cluster, and synchronised batch norm.

Several machines: every worker runs the same train.py command with its own
TF_CONFIG. Each worker's `SegmentationDataset` yields the same global batches
in the same order (the order and the augmentation are functions of the seed,
epoch and sample alone), and `tf.distribute` keeps each worker's slice of
every global batch (auto-sharding falls back to DATA for a generator data
set), so the cluster computes what one device computes on the global batch.
"""
import contextlib
import json
import os

from utils.errors import UserError

# === Strategy ===

def make_strategy(multi_gpus):
    """-> (scope context manager, number of replicas in sync, description).

    TensorFlow: `MultiWorkerMirroredStrategy` when TF_CONFIG names a cluster,
    else `MirroredStrategy` over every visible GPU (or, with no GPU, every
    logical CPU device when more than one is configured, which is how the
    tests run it). JAX: `keras.distribution.DataParallel` over all devices.
    With `multi_gpus` false, a TF_CONFIG naming several tasks is an error:
    each worker would train alone and the chief's run folder would be written
    by all of them.
    """
    if not multi_gpus:
        tasks = cluster_size()
        if tasks > 1:
            raise UserError(f"TF_CONFIG names a cluster of {tasks} tasks but --multi_gpus is false; "
                            "pass --multi_gpus true on every worker, or unset TF_CONFIG")
        return contextlib.nullcontext(), 1, "one device"
    import keras
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf
        if os.environ.get("TF_CONFIG"):
            _read_tf_config()  # a malformed TF_CONFIG is one line, not a TensorFlow traceback
            strategy = _multi_worker_strategy()
            kind = "MultiWorkerMirroredStrategy (TF_CONFIG)"
        else:
            devices = [d.name for d in tf.config.list_logical_devices("GPU")]
            if not devices:
                devices = [d.name for d in tf.config.list_logical_devices("CPU")]
            strategy = tf.distribute.MirroredStrategy(devices)
            kind = "MirroredStrategy over " + ", ".join(devices)
        return strategy.scope(), strategy.num_replicas_in_sync, kind
    if backend == "jax":
        devices = keras.distribution.list_devices()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        return contextlib.nullcontext(), len(devices), "keras.distribution.DataParallel over " + ", ".join(devices)
    raise UserError(f"--multi_gpus true needs the tensorflow or jax backend (KERAS_BACKEND is {backend})")


def _multi_worker_strategy():
    """A `MultiWorkerMirroredStrategy` whose `reduce` takes what Keras 3's TF trainer passes it.

    Keras 3.13 (keras-team/keras#20585) breaks `fit` under this strategy in two places:
    - before the first step it reduces the first batch, an `(x, y)` tuple of
      per-replica values, to build the model; MirroredStrategy maps `reduce`
      over a nest, this strategy does not ("Attempt to convert a value
      (PerReplica...) with an unsupported type");
    - it reduces every step's logs, scalars, with `axis=0`, which a scalar
      lacks ("Invalid reduction dimension 0 for input with 0 dimensions").
    `reduce` here maps over nests and reduces a scalar across replicas only
    (axis None), which is what MirroredStrategy's path computes (the mean of
    the replicas' values). Both are no-ops for the calls TensorFlow supports,
    so a fixed Keras is unaffected.
    """
    import tensorflow as tf
    base = tf.distribute.MultiWorkerMirroredStrategy

    def rank(value):
        if isinstance(value, tf.distribute.DistributedValues):
            value = value.values[0]
        shape = getattr(value, "shape", ())
        return shape.rank if isinstance(shape, tf.TensorShape) else len(shape)

    class NestedReduceMultiWorkerMirroredStrategy(base):
        def reduce(self, reduce_op, value, axis):
            def one(v):
                return base.reduce(self, reduce_op, v, None if axis is not None and rank(v) == 0 else axis)
            return tf.nest.map_structure(one, value)

    return NestedReduceMultiWorkerMirroredStrategy()


# === TF_CONFIG ===

def _read_tf_config():
    """TF_CONFIG as a dict ({} when unset); malformed JSON or a bad task is a UserError."""
    text = os.environ.get("TF_CONFIG") or ""
    if not text.strip():
        return {}
    try:
        config = json.loads(text)
    except json.JSONDecodeError:
        raise UserError("TF_CONFIG is not valid JSON") from None
    if not isinstance(config, dict):
        raise UserError("TF_CONFIG must be a JSON object with 'cluster' and 'task'")
    task = config.get("task", {})
    if not isinstance(task, dict) or not isinstance(task.get("index", 0), int):
        raise UserError("TF_CONFIG's 'task' must be an object with an integer 'index'")
    if not isinstance(config.get("cluster", {}), dict):
        raise UserError("TF_CONFIG's 'cluster' must map task types to address lists")
    return config


def cluster_size():
    """Number of tasks TF_CONFIG's cluster names (0 when TF_CONFIG is unset)."""
    cluster = _read_tf_config().get("cluster", {})
    return sum(len(addresses) for addresses in cluster.values() if isinstance(addresses, list))


def worker_index():
    """This process's rank among the training workers: 0 is the chief, the one that writes the run folder.

    With no TF_CONFIG, 0. A cluster with a "chief" task: the chief is 0 and
    worker i is i + 1 (worker 0 is not the chief there). Without one,
    worker i is i (TensorFlow's convention: worker 0 is the chief). Other
    task types (ps, evaluator) do not train with MultiWorkerMirroredStrategy: -1.
    """
    config = _read_tf_config()
    task = config.get("task", {})
    kind, index = task.get("type", "worker"), task.get("index", 0)
    if kind == "chief":
        return 0
    if kind != "worker":
        return -1
    return index + 1 if config.get("cluster", {}).get("chief") else index


# === Batch norm ===

def synchronize_batch_norm(model):
    """Batch statistics over the global batch, not each replica's slice (SyncBN, as mmsegmentation
    trains on several GPUs): the replicated run then computes what one device would."""
    import keras
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True
