"""Loading Keras (and its backend) without TensorFlow's start-up noise.

TensorFlow writes absl/CUDA lines straight to file descriptor 2 while it
loads and when it first looks for a GPU ("All log messages before
absl::InitializeLog() ...", oneDNN and cudart notes, "failed call to cuInit"
on a machine without one); TF_CPP_MIN_LOG_LEVEL does not reach the ones
logged before absl starts. `import_keras` runs both steps with fd 2 sent to a
temporary file and writes back every line that is not one of those notes, so
a real error still shows.
"""
import contextlib
import os
import re
import sys
import tempfile

from utils.cli import quiet_tensorflow_env

# Start-up notes of TensorFlow and XLA, each harmless on a CPU-only machine.
NOISE = re.compile(
    r"All log messages before absl::InitializeLog|port\.cc:\d+\] oneDNN custom operations|"
    r"cudart_stub\.cc|cuda_platform\.cc|failed call to cuInit|Could not find cuda drivers|"
    r"Unable to register cu(DNN|FFT|BLAS) factory|computation_placer\.cc|"
    r"This TensorFlow binary is optimized|To enable the following instructions|"
    r"rebuild TensorFlow with the appropriate compiler flags|TF-TRT Warning|cpu_feature_guard\.cc")


@contextlib.contextmanager
def filtered_stderr(pattern=NOISE):
    """Drop the lines that file descriptor 2 receives inside the block and that match `pattern`."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode("utf-8", "replace").splitlines(keepends=True):
                if not pattern.search(line):
                    sys.stderr.write(line)
            sys.stderr.flush()


def import_keras():
    """Import and return keras; under TensorFlow also initialise the devices (where cuInit runs)."""
    quiet_tensorflow_env()
    if "keras" in sys.modules:
        return sys.modules["keras"]
    with filtered_stderr():
        import keras
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf
            tf.config.list_physical_devices()
    return keras
