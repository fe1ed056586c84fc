"""The files of a data set: images paired with labels by stem, and class-name lists.

One implementation of each rule for every script (train.py, test.py,
tools/verify_dataset.py, tools/evaluate.py, augmentation.py,
json_to_dataset.py). No Keras import: tools/evaluate.py and
tools/verify_dataset.py run without TensorFlow.
"""
import os
from dataclasses import dataclass

from utils.errors import UserError
from utils.image import IMAGE_EXTS, LABEL_EXTS

SPLITS = ("train", "val", "test")
# Found in label folders only to be refused: JPEG compression changes class ids at every edge.
LOSSY_LABEL_EXTS = (".jpg", ".jpeg")
MAX_NAMED = 8  # files named in a one-line error; the count is always given


# === Pairing by stem ===

@dataclass(frozen=True)
class StemPairs:
    """What `pair_by_stem` found in an image folder and a label folder (paths, sorted by stem).

    - pairs: [(image_path, label_path)], one per stem present once in each folder;
    - unpaired_images / unpaired_labels: files whose stem the other folder lacks;
    - jpeg_labels: label-folder files saved as JPEG; their image is not also "unpaired";
    - duplicates: [[path, path, ...]] files of ONE folder that share a stem (`a.png`, `a.jpg`);
      such a stem is in no other list, in either folder: which file was meant is unknowable.
    """
    pairs: list
    unpaired_images: list
    unpaired_labels: list
    jpeg_labels: list
    duplicates: list


def _where(folder, flag):
    return f"{flag} {folder}" if flag else folder


def _files_by_stem(folder, extensions):
    stems = {}
    for name in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(name)
        if ext.lower() in extensions and not name.startswith(".") and os.path.isfile(os.path.join(folder, name)):
            stems.setdefault(stem, []).append(os.path.join(folder, name))
    return stems


def _stem(path):
    return os.path.splitext(os.path.basename(path))[0]


def pair_by_stem(image_dir, label_dir, image_exts=IMAGE_EXTS, label_exts=LABEL_EXTS, image_flag=None,
                 label_flag=None):
    """Pair the files of two folders by stem -> `StemPairs`; never raises for what it finds.

    Image-folder files count when their extension is in `image_exts`, label-folder files when it
    is in `label_exts` or is .jpg/.jpeg (reported as `jpeg_labels`); extensions are compared
    case-insensitively, hidden files and sub-folders are skipped. A missing folder is a
    `UserError` ("<flag> <folder>: folder not found" when a flag is given).
    """
    for folder, flag in ((image_dir, image_flag), (label_dir, label_flag)):
        if not os.path.isdir(folder):
            raise UserError(f"{_where(folder, flag)}: folder not found")
    images = _files_by_stem(image_dir, tuple(image_exts))
    labels = _files_by_stem(label_dir, tuple(label_exts) + LOSSY_LABEL_EXTS)
    duplicates = [paths for found in (images, labels) for paths in found.values() if len(paths) > 1]
    repeated = {_stem(paths[0]) for paths in duplicates}
    images = {s: p[0] for s, p in images.items() if s not in repeated}
    labels = {s: p[0] for s, p in labels.items() if s not in repeated}
    jpeg = {s for s, p in labels.items() if os.path.splitext(p)[1].lower() in LOSSY_LABEL_EXTS}
    return StemPairs(
        pairs=[(images[s], labels[s]) for s in sorted(set(images) & set(labels) - jpeg)],
        unpaired_images=[images[s] for s in sorted(set(images) - set(labels))],
        unpaired_labels=[labels[s] for s in sorted(set(labels) - set(images) - jpeg)],
        jpeg_labels=[labels[s] for s in sorted(jpeg)],
        duplicates=duplicates,
    )


def duplicate_message(paths):
    """'<folder>: a.jpg and a.png share the stem 'a'; stems must be unique ...' for one `duplicates` entry."""
    names = [os.path.basename(p) for p in paths]
    return (f"{os.path.dirname(paths[0])}: {', '.join(names[:-1])} and {names[-1]} share the stem "
            f"{_stem(paths[0])!r}; stems must be unique (rename or remove one)")


def jpeg_label_message(path, label_word="label"):
    return (f"{path}: {label_word} saved as JPEG; JPEG compression changes class ids at every edge, "
            f"save {label_word}s as PNG")


def short_list(paths, limit=MAX_NAMED):
    names = sorted(os.path.basename(p) for p in paths)
    return ", ".join(names[:limit]) + (f" ... ({len(names)} in all)" if len(names) > limit else "")


def _a(word):
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


def paired_files(image_dir, label_dir, image_word="image", label_word="label", image_exts=IMAGE_EXTS,
                 label_exts=LABEL_EXTS, image_flag=None, label_flag=None):
    """[(image_path, label_path)] sorted by stem, or a one-line `UserError` for the first problem:

    a repeated stem (naming the files), a JPEG label, unpaired files (both sides listed:
    "unpaired files: images without a label in <label_dir>: ...; labels without an image in
    <image_dir>: ..."), no files at all. `image_word`/`label_word` name the two kinds in the
    messages (test.py: image/label; tools/evaluate.py: prediction/label; augmentation.py: image/mask).
    """
    found = pair_by_stem(image_dir, label_dir, image_exts, label_exts, image_flag, label_flag)
    if found.duplicates:
        more = f" ({len(found.duplicates)} repeated stems in all)" if len(found.duplicates) > 1 else ""
        raise UserError(duplicate_message(found.duplicates[0]) + more)
    if found.jpeg_labels:
        more = f" ({len(found.jpeg_labels)} JPEG {label_word}s in {label_dir})" if len(found.jpeg_labels) > 1 else ""
        raise UserError(jpeg_label_message(found.jpeg_labels[0], label_word) + more)
    if found.unpaired_images or found.unpaired_labels:
        parts = []
        if found.unpaired_images:
            parts.append(f"{image_word}s without {_a(label_word)} in {label_dir}: {short_list(found.unpaired_images)}")
        if found.unpaired_labels:
            parts.append(f"{label_word}s without {_a(image_word)} in {image_dir}: {short_list(found.unpaired_labels)}")
        raise UserError("unpaired files: " + "; ".join(parts))
    if not found.pairs:
        raise UserError(f"{_where(image_dir, image_flag)}: no {image_word}s ({', '.join(image_exts)}) found")
    return found.pairs


# === Class names ===

def default_class_names(n_classes):
    return [f"class_{i}" for i in range(n_classes)]


def read_class_names(path, n_classes=None, flag=None, count_flag="--n_classes"):
    """Class names from a text file; the k-th name is class id k.

    The rules, for every script that reads such a file:
    - one name per line, surrounding whitespace stripped; blank lines are skipped (they take no id);
    - a name listed twice is an error;
    - with `n_classes`: more names than classes is an error, and missing names become class_<i>;
    - an unreadable file is an error.
    Errors start with "<flag> <path>" (e.g. "--class_names names.txt") or the path alone;
    `count_flag` is the flag that set `n_classes`, named in the "too many names" error.
    """
    where = _where(path, flag)
    try:
        with open(path, encoding="utf-8") as handle:
            names = [line.strip() for line in handle if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{where}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserError(f"{where}: names listed twice: {', '.join(repeated)}")
    if n_classes is None:
        return names
    if len(names) > n_classes:
        raise UserError(f"{where}: {len(names)} names for {n_classes} classes ({count_flag})")
    return names + default_class_names(n_classes)[len(names):]
