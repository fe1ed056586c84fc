"""Check a model file the user names before any loader sees it.

Loaders (Keras, h5py, onnxruntime, TensorFlow, the TFLite interpreter) meet a
damaged or mislabelled file with a traceback, or with a reason that does not
say which file or flag is at fault. `check_model_file(path, flag)` reads only
the file's header (and, where that is cheap, its structure) and answers with a
`UserError` of one line naming the flag, the file and the rule it breaks.
`loader_errors(path, flag, loader)` wraps the real load call, so that what the
header cannot show (damage inside, a Keras version mismatch) still ends as one
line with the loader's reason.
"""
import contextlib
import json
import os
import zipfile
import zlib

from utils.errors import UserError

# === Kinds ===

ALL_KINDS = ("keras", "h5", "onnx", "tflite", "savedmodel", "openvino", "ncnn")
SUFFIX_KINDS = {".keras": "keras", ".h5": "h5", ".onnx": "onnx", ".tflite": "tflite", ".xml": "openvino",
                ".param": "ncnn"}
KIND_NAMES = {"keras": "a .keras model", "h5": "an .h5 weights file", "onnx": "an .onnx model",
              "tflite": "a .tflite model", "savedmodel": "a SavedModel folder",
              "openvino": "an OpenVINO .xml model", "ncnn": "an NCNN .param model"}
# Two-file formats: the graph file names the kind, its weights sit beside it with this suffix.
WEIGHTS_SUFFIX = ".bin"
NCNN_MAGIC = "7767517"  # the first line of a text .param file
# What the content is, told apart by its first bytes (ONNX, a bare protobuf, has no signature).
ZIP_MAGIC = b"PK\x03\x04"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
TFLITE_IDENTIFIER = b"TFL3"  # the flatbuffer file identifier, at bytes 4..8
CONTENT_NAMES = {"zip": "a zip archive (a .keras model?)", "hdf5": "an HDF5 file (an .h5 file?)",
                 "tflite": "a TFLite flatbuffer (a .tflite model?)"}
KERAS_WEIGHTS_MEMBERS = ("model.weights.h5", "model.weights.npz")
REASON_CHARS = 300


def _where(flag, path):
    return f"{flag} {path}" if flag else str(path)


def first_line(exc):
    """The first line of an exception's message (its type name when it has none), cut to a readable length."""
    lines = str(exc).strip().splitlines()
    return (lines[0].strip() if lines else type(exc).__name__)[:REASON_CHARS]


def expected_kinds(accepted):
    """'a .keras model or an .h5 weights file' for ("keras", "h5")."""
    names = [KIND_NAMES[kind] for kind in accepted]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def weights_path(path):
    """The weights file of an OpenVINO .xml or NCNN .param model: the same name with .bin."""
    return os.path.splitext(os.fspath(path))[0] + WEIGHTS_SUFFIX


def _sniff(head):
    if head.startswith(ZIP_MAGIC):
        return "zip"
    if head.startswith(HDF5_MAGIC):
        return "hdf5"
    if head[4:8] == TFLITE_IDENTIFIER:
        return "tflite"
    return None


# === The check ===

def check_model_file(path, flag, accepted=ALL_KINDS):
    """The kind of model at `path` (one of `ALL_KINDS`), or a one-line `UserError`.

    Rejects, naming `flag` and `path`: a missing path; a folder that is not a SavedModel; a kind not in
    `accepted` (from the suffix); an unreadable or empty file; content of another format than the suffix
    says; a .keras that is not a complete zip with config.json and model.weights.h5; an .h5 without the
    HDF5 signature or that h5py cannot open; an .onnx that does not parse as an ONNX model; a .tflite
    without the TFL3 identifier; an OpenVINO .xml without a <net> element, an NCNN .param without its
    7767517 first line, or either without a non-empty .bin beside it. `flag` may be "" (the message
    then starts with the path).
    """
    where = _where(flag, path)
    path = os.fspath(path)
    if not os.path.exists(path):
        raise UserError(f"{where}: no such file or folder")
    expected = expected_kinds(accepted)
    if os.path.isdir(path):
        return _check_savedmodel(path, where, accepted, expected)
    suffix = os.path.splitext(path)[1].lower()
    kind = SUFFIX_KINDS.get(suffix)
    if kind not in accepted:
        got = f"unknown file type {suffix!r}" if kind is None else KIND_NAMES[kind]
        raise UserError(f"{where}: expected {expected} (got {got})")
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError as exc:
        raise UserError(f"{where}: cannot be read ({exc.strerror or first_line(exc)})") from None
    if size == 0:
        raise UserError(f"{where}: empty file (0 bytes)")
    content = _sniff(head)
    {"keras": _check_keras, "h5": _check_h5, "onnx": _check_onnx, "tflite": _check_tflite,
     "openvino": _check_openvino, "ncnn": _check_ncnn}[kind](path, where, content, size)
    return kind


def _not_what_suffix_says(where, what, content, missing=None):
    """'<where>: is not <what> (its content is <what it is>)', else '(<missing>)' when the content is unknown."""
    why = f"its content is {CONTENT_NAMES[content]}" if content else missing
    return UserError(f"{where}: is not {what}" + (f" ({why})" if why else ""))


def _check_savedmodel(path, where, accepted, expected):
    if "savedmodel" not in accepted:
        raise UserError(f"{where}: expected {expected} (got a folder)")
    graph = next((os.path.join(path, name) for name in ("saved_model.pb", "saved_model.pbtxt")
                  if os.path.isfile(os.path.join(path, name))), None)
    if graph is None:
        raise UserError(f"{where}: a folder that is not a SavedModel (no saved_model.pb)")
    if os.path.getsize(graph) == 0:
        raise UserError(f"{where}: not a complete SavedModel ({os.path.basename(graph)} is empty)")
    return "savedmodel"


def _check_keras(path, where, content, size):
    if content != "zip":
        raise _not_what_suffix_says(where, "a Keras .keras zip archive", content)
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            missing = [m for m in ("config.json",) if m not in names]
            if not any(m in names for m in KERAS_WEIGHTS_MEMBERS):
                missing.append(KERAS_WEIGHTS_MEMBERS[0])
            if missing:
                raise UserError(f"{where}: not a Keras .keras model (the zip has no {' or '.join(missing)})")
            damaged = archive.testzip()  # every member's CRC: catches damage inside, not only a cut tail
            if damaged is not None:
                raise UserError(f"{where}: damaged .keras archive (bad CRC in {damaged})")
            config = json.loads(archive.read("config.json").decode("utf-8"))
    except UserError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError) as exc:
        # A zip's directory is its last part: a cut file starts like a zip and loses exactly that.
        reason = "its zip directory, at the end, is missing" if "not a zip file" in str(exc) else first_line(exc)
        raise UserError(f"{where}: truncated or damaged .keras zip archive ({reason})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{where}: damaged .keras model (config.json is not JSON: {first_line(exc)})") from None
    if not isinstance(config, dict):
        raise UserError(f"{where}: damaged .keras model (config.json is not a JSON object)")


def _check_h5(path, where, content, size):
    if content != "hdf5":
        raise _not_what_suffix_says(where, "an HDF5 file", content, "no HDF5 signature")
    import h5py
    try:
        with h5py.File(path, "r"):
            pass
    except (OSError, ValueError) as exc:
        raise UserError(f"{where}: truncated or damaged HDF5 file ({first_line(exc)})") from None


def _check_onnx(path, where, content, size):
    if content is not None:
        raise _not_what_suffix_says(where, "an ONNX model", content)
    try:
        import onnx
    except ImportError:  # onnxruntime alone can still run the file; it then answers for it
        return
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends: no common base class worth importing
        raise UserError(f"{where}: not an ONNX model (it does not parse: {first_line(exc)})") from None
    # A protobuf parser accepts many byte strings (unknown fields are kept): demand a model's essentials.
    if model.ir_version <= 0 or not model.graph.output:
        raise UserError(f"{where}: not an ONNX model (no IR version or no graph outputs)")


def _check_tflite(path, where, content, size):
    if content != "tflite":
        raise _not_what_suffix_says(where, "a TFLite model", content, f"no {TFLITE_IDENTIFIER.decode()} identifier")
    if size < 16:
        raise UserError(f"{where}: truncated TFLite model ({size} bytes)")


def _read_text_head(path, where, n=4096):
    try:
        with open(path, "rb") as handle:
            return handle.read(n).decode("utf-8", errors="replace")
    except OSError as exc:
        raise UserError(f"{where}: cannot be read ({exc.strerror or first_line(exc)})") from None


def _check_weights_beside(path, where, what):
    weights = weights_path(path)
    if not os.path.isfile(weights):
        raise UserError(f"{where}: its weights file {weights} is missing ({what} is the {os.path.splitext(path)[1]} "
                        f"and the .bin beside it)")
    if os.path.getsize(weights) == 0:
        raise UserError(f"{where}: its weights file {weights} is empty (0 bytes)")


def _check_openvino(path, where, content, size):
    if content is not None:
        raise _not_what_suffix_says(where, "an OpenVINO IR .xml", content)
    head = _read_text_head(path, where)
    if "<net" not in head:
        raise UserError(f"{where}: is not an OpenVINO IR .xml (no <net> element at its start)")
    _check_weights_beside(path, where, "an OpenVINO IR")


def _check_ncnn(path, where, content, size):
    if content is not None:
        raise _not_what_suffix_says(where, "an NCNN .param", content)
    lines = _read_text_head(path, where).splitlines()
    if not lines or lines[0].strip() != NCNN_MAGIC:
        raise UserError(f"{where}: is not an NCNN .param (its first line is not the magic number {NCNN_MAGIC})")
    counts = lines[1].split() if len(lines) > 1 else []
    if len(counts) != 2 or not all(c.isdigit() for c in counts):
        raise UserError(f"{where}: truncated or damaged NCNN .param (no layer and blob counts on line 2)")
    _check_weights_beside(path, where, "an NCNN model")


# === Around the real load ===

@contextlib.contextmanager
def loader_errors(path, flag, loader):
    """Turn any exception of the load call inside into a one-line `UserError` naming `flag`, `path` and
    `loader`, with the loader's reason in short; a `UserError` passes through unchanged."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:  # loaders raise anything (ValueError, OSError, IndexError, runtime errors)
        raise UserError(f"{_where(flag, path)}: {loader} cannot load it ({first_line(exc)})") from None


def check_text_file(path, flag):
    """A readable UTF-8 text file, or a one-line `UserError` naming `flag` and `path`."""
    where = _where(flag, path)
    if not os.path.exists(path):
        raise UserError(f"{where}: no such file")
    if os.path.isdir(path):
        raise UserError(f"{where}: a folder, expected a text file")
    try:
        with open(path, encoding="utf-8") as handle:
            handle.read()
    except OSError as exc:
        raise UserError(f"{where}: cannot be read ({exc.strerror or first_line(exc)})") from None
    except UnicodeDecodeError:
        raise UserError(f"{where}: not UTF-8 text") from None


def check_folder(path, flag):
    """An existing folder, or a one-line `UserError` naming `flag` and `path`."""
    if not os.path.exists(path):
        raise UserError(f"{_where(flag, path)}: folder not found")
    if not os.path.isdir(path):
        raise UserError(f"{_where(flag, path)}: a file, expected a folder")
