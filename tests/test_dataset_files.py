"""utils/dataset_files.py: the one pairing rule and the one class-name reader, as tables of hand-written cases."""
import os

import pytest

from utils.dataset_files import pair_by_stem, paired_files, read_class_names
from utils.errors import UserError


def make_folders(tmp_path, images, labels):
    """Empty files are enough: pairing reads names, never contents."""
    for sub, names in (("img", images), ("lab", labels)):
        (tmp_path / sub).mkdir()
        for name in names:
            if name.endswith("/"):
                (tmp_path / sub / name).mkdir()
            else:
                (tmp_path / sub / name).write_bytes(b"")
    return str(tmp_path / "img"), str(tmp_path / "lab")


def names(paths):
    return [os.path.basename(p) for p in paths]


# images, labels -> pairs, unpaired images, unpaired labels, JPEG labels, duplicates (file names)
PAIRING = [
    ("extensions may differ", ["a.png", "b.jpg"], ["a.png", "b.png"],
     [("a.png", "a.png"), ("b.jpg", "b.png")], [], [], [], []),
    ("image without label", ["a.png", "b.png"], ["a.png"], [("a.png", "a.png")], ["b.png"], [], [], []),
    ("label without image", ["a.png"], ["a.png", "z.png"], [("a.png", "a.png")], [], ["z.png"], [], []),
    ("repeated image stem: neither file paired, its label not unpaired", ["a.png", "a.jpg", "b.png"],
     ["a.png", "b.png"], [("b.png", "b.png")], [], [], [], [["a.jpg", "a.png"]]),
    ("repeated label stem, JPEG beside PNG", ["a.png"], ["a.png", "a.jpg"], [], [], [], [], [["a.jpg", "a.png"]]),
    ("extension case: repeated", ["a.png", "a.PNG"], ["a.png"], [], [], [], [], [["a.PNG", "a.png"]]),
    ("JPEG label: its image is not unpaired", ["a.png"], ["a.jpg"], [], [], [], ["a.jpg"], []),
    ("upper-case extensions count", ["A.JPG"], ["A.PNG"], [("A.JPG", "A.PNG")], [], [], [], []),
    ("hidden files, sub-folders, other extensions skipped", ["a.png", ".b.png", "c.png/", "notes.txt"],
     ["a.png", "x.bmp", "d.png/"], [("a.png", "a.png")], [], [], [], []),
]


@pytest.mark.parametrize("case, images, labels, pairs, no_label, no_image, jpeg, duplicates", PAIRING,
                         ids=[row[0] for row in PAIRING])
def test_pair_by_stem_rules(tmp_path, case, images, labels, pairs, no_label, no_image, jpeg, duplicates):
    found = pair_by_stem(*make_folders(tmp_path, images, labels))
    assert [(os.path.basename(i), os.path.basename(l)) for i, l in found.pairs] == pairs
    assert names(found.unpaired_images) == no_label
    assert names(found.unpaired_labels) == no_image
    assert names(found.jpeg_labels) == jpeg
    assert [names(group) for group in found.duplicates] == duplicates


# images, labels, keyword arguments -> the one-line error (IMG and LAB stand for the two folders)
STRICT = [
    ("repeated stem", ["a.png", "a.jpg"], ["a.png"], {},
     "IMG: a.jpg and a.png share the stem 'a'; stems must be unique (rename or remove one)"),
    ("JPEG label", ["a.png"], ["a.jpg"], {"label_word": "mask"},
     "LAB/a.jpg: mask saved as JPEG; JPEG compression changes class ids at every edge, save masks as PNG"),
    ("both sides unpaired", ["a.png", "b.png"], ["a.png", "z.png"], {},
     "unpaired files: images without a label in LAB: b.png; labels without an image in IMG: z.png"),
    ("words of tools/evaluate.py", ["a.png", "b.png"], ["a.png"], {"image_word": "prediction"},
     "unpaired files: predictions without a label in LAB: b.png"),
    ("long lists are cut", [f"i{k}.png" for k in range(10)], [], {},
     "unpaired files: images without a label in LAB: i0.png, i1.png, i2.png, i3.png, i4.png, i5.png, i6.png, "
     "i7.png ... (10 in all)"),
    ("nothing to pair", [], [], {"image_flag": "--train_path"},
     "--train_path IMG: no images (.jpg, .jpeg, .png, .bmp, .tif, .tiff) found"),
]


@pytest.mark.parametrize("case, images, labels, kwargs, message", STRICT, ids=[row[0] for row in STRICT])
def test_paired_files_errors(tmp_path, case, images, labels, kwargs, message):
    image_dir, label_dir = make_folders(tmp_path, images, labels)
    with pytest.raises(UserError) as err:
        paired_files(image_dir, label_dir, **kwargs)
    assert str(err.value) == message.replace("IMG", image_dir).replace("LAB", label_dir)


def test_paired_files_missing_folder_names_the_flag(tmp_path):
    image_dir, _ = make_folders(tmp_path, ["a.png"], [])
    with pytest.raises(UserError) as err:
        paired_files(image_dir, str(tmp_path / "nope"), label_flag="--mask_path")
    assert str(err.value) == f"--mask_path {tmp_path / 'nope'}: folder not found"


def test_paired_files_returns_full_paths_sorted_by_stem(tmp_path):
    image_dir, label_dir = make_folders(tmp_path, ["b.jpg", "a.png"], ["b.png", "a.png"])
    assert paired_files(image_dir, label_dir) == [(os.path.join(image_dir, "a.png"), os.path.join(label_dir, "a.png")),
                                                  (os.path.join(image_dir, "b.jpg"), os.path.join(label_dir, "b.png"))]


# file text, n_classes -> names, or the error after "<path>: "
NAMES = [
    ("blank lines take no id, missing names padded", "a\n\n  b  \n\n", 3, ["a", "b", "class_2"]),
    ("exactly n", "a\nb\n", 2, ["a", "b"]),
    ("empty file", "", 2, ["class_0", "class_1"]),
    ("no count given", "x\ny\nz\n", None, ["x", "y", "z"]),
    ("too many", "a\nb\nc\n", 2, "3 names for 2 classes (--n_classes)"),
    ("listed twice", "a\nb\na\nb\nc\n", 5, "names listed twice: a, b"),
    ("twice counts before too many", "a\na\n", 1, "names listed twice: a"),
]


@pytest.mark.parametrize("case, text, n_classes, expected", NAMES, ids=[row[0] for row in NAMES])
def test_read_class_names_rules(tmp_path, case, text, n_classes, expected):
    path = tmp_path / "names.txt"
    path.write_text(text, encoding="utf-8")
    if isinstance(expected, list):
        assert read_class_names(str(path), n_classes) == expected
    else:
        with pytest.raises(UserError) as err:
            read_class_names(str(path), n_classes)
        assert str(err.value) == f"{path}: {expected}"


def test_read_class_names_flags_and_unreadable_files(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("a\nb\n")
    with pytest.raises(UserError) as err:
        read_class_names(str(path), 1, flag="--class_names", count_flag="--classes")
    assert str(err.value) == f"--class_names {path}: 2 names for 1 classes (--classes)"
    with pytest.raises(UserError) as err:
        read_class_names(str(tmp_path / "nope.txt"), 2, flag="--labels")
    assert str(err.value) == f"--labels {tmp_path / 'nope.txt'}: cannot be read (No such file or directory)"
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(UserError, match=r"names\.txt: cannot be read \("):
        read_class_names(str(path), 2)
