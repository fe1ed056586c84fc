#!/usr/bin/env bash
# Issue #15 item 4, on a machine with one accelerator: tools/benchmark.py under KERAS_BACKEND=jax for
# unet, deeplab_v3+ and mobilenet_fcn8 at 224 and 512. Per size it prints each model's training
# images/s (random in-memory batches: the model's own rate), the input pipeline's images/s at that size,
# each model's "loader's share" (model rate / pipeline rate: >= 100% means the device waits for data)
# and train.py against a bare fit of unet (the same question inside the real training loop).
#
#   bash tools/gpu_benchmark.sh                    # ~8-10 minutes on one GPU once JAX sees it
#   SIZES=224 SECONDS_PER=3 bash tools/gpu_benchmark.sh
#
# Needs a CUDA JAX (pip install "jax[cuda12]"); refuses to run on JAX's CPU. The pipeline is CPU work:
# its rate is the host's, which is what a GPU run is limited by. DATA_DIR defaults to bbufdataset
# (512x512 JPEGs) and falls back to data/demo (256x256) when absent, as tools/benchmark.py does.
set -euo pipefail
cd "$(dirname "$0")/.."
export KERAS_BACKEND=jax TF_CPP_MIN_LOG_LEVEL=3 XLA_PYTHON_CLIENT_PREALLOCATE=false
SIZES=${SIZES:-"224 512"}
BATCH=${BATCH:-8}
SECONDS_PER=${SECONDS_PER:-5}
DATA_DIR=${DATA_DIR:-../shared/datasets/bbufdataset}
OUT=${OUT:-gpu-benchmark}
# On the first size only, train.py reruns without these (on JAX-on-CPU at 32x32 train.py ran at 0.12x a bare fit:
# per-epoch costs, to be pinned at a real size).
ABLATIONS=${ABLATIONS:-checkpoints,tensorboard}
mkdir -p "$OUT"

python - <<'PY'
import sys
import jax
devices = jax.devices()
if devices[0].platform == "cpu":
    sys.exit("error: JAX sees no accelerator (jax.devices() = cpu); install a CUDA JAX, e.g. jax[cuda12]")
print("devices:", ", ".join(str(d) for d in devices))
PY
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true

for size in $SIZES; do
  echo "=== ${size}x${size}, batch ${BATCH} ==="
  # models (training only: the inference columns export to ONNX through TensorFlow) + pipeline.
  python tools/benchmark.py --sections peak,pipeline,models --train_only --models unet,deeplab_v3+,mobilenet_fcn8 \
    --size "$size" --batch_size "$BATCH" --seconds "$SECONDS_PER" --data_dir "$DATA_DIR" \
    --output "$OUT/models_${size}.json"
  # The real training loop against a bare fit (3 epochs: the first, with XLA compilation, is not timed).
  python tools/benchmark.py --sections overhead --overhead_model unet --overhead_size "$size" \
    --overhead_epochs 3 --batch_size "$BATCH" --data_dir "$DATA_DIR" --overhead_ablations "$ABLATIONS" \
    --output "$OUT/overhead_${size}.json"
  ABLATIONS=""
done
echo "results under $OUT/"
