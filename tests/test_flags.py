"""Flag parsing answers before Keras loads (fast lane: no training)."""
import tempfile

from conftest import run_without


def test_help_and_flag_errors_do_not_load_keras():
    """`train.py --help` and a bad name answer before Keras/TensorFlow load (they took ~10 s before)."""
    code = ("import sys, train\n"
            "try:\n    train.parse_args(['--help'])\nexcept SystemExit:\n    pass\n"
            "try:\n    train.main(['--model_name', 'nope', '--train_save_path', sys.argv[1]])\n"
            "except Exception as exc:\n    print('ERR', exc)\n")
    with tempfile.TemporaryDirectory() as save:
        done = run_without(code, save)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "--model_name" in done.stdout and "ERR --model_name 'nope' is unknown" in done.stdout
