"""A user's own image folder, as issue 23's trial used it: class folders of PNGs, ids in a metadata.csv,
string labels, a damaged file; through the CLI a user runs."""

import json
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

from hf_deepclean.cli import main
from hf_deepclean.data import load_image_dataset

CLASSES = ("circle", "square", "triangle")


def _folder(root: Path, per_class: int = 12, *, metadata: bool = False) -> Path:
    rng = np.random.default_rng(0)
    rows = ["file_name,sample_id"]
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = (rng.random((16, 16, 3)) * 80 + 60 * c).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:03d}.png")
            rows.append(f"{name}/{i:03d}.png,{name}-{i:03d}")
    if metadata:
        (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    return root


def test_ids_in_a_metadata_file_keep_the_folder_labels(tmp_path):
    data = load_image_dataset(train_dir=str(_folder(tmp_path / "shapes", metadata=True)))
    assert data["train"].features["label"].names == list(CLASSES)
    assert "sample_id" in data["train"].column_names
    one = data["train"].filter(lambda r: r["sample_id"] == "triangle-003")
    assert one["label"] == [CLASSES.index("triangle")]


def test_string_labels_become_classes_shared_by_both_splits(tmp_path):
    images = [Image.new("RGB", (8, 8), (i * 20, 0, 0)) for i in range(12)]
    split = datasets.Dataset.from_dict({"image": images, "label": ["dog", "cat", "emu"] * 4},
                                       features=datasets.Features({"image": datasets.Image(),
                                                                   "label": datasets.Value("string")}))
    datasets.DatasetDict(train=split, test=split.select(range(2))).save_to_disk(str(tmp_path / "ds"))
    data = load_image_dataset(str(tmp_path / "ds"))
    assert data["train"].features["label"].names == ["cat", "dog", "emu"]
    # the test split holds only dog and cat: it still takes the training split's ids
    assert data["test"].features["label"].names == ["cat", "dog", "emu"] and data["test"]["label"] == [1, 0]


def test_a_damaged_image_stops_the_run_with_one_line_naming_it(tmp_path, capsys):
    root = _folder(tmp_path / "shapes")
    broken = root / "square" / "005.png"
    broken.write_bytes(broken.read_bytes()[:80])  # truncated
    code = main(["train", "--train_dir", str(root), "--max_steps", "3", "--per_device_train_batch_size", "36",
                 "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert "square/005.png" in line and "remove or replace it" in line
    assert not (tmp_path / "out").exists()


def test_forget_ids_of_an_image_folder_end_to_end_and_the_card_names_the_folder(tmp_path, capsys):
    root = _folder(tmp_path / "shapes", metadata=True)
    original = tmp_path / "original"
    assert main(["train", "--train_dir", str(root), "--max_steps", "2", "--disable_tqdm", "true",
                 "--output_dir", str(original)]) == 0
    request = tmp_path / "request.txt"
    ids = load_image_dataset(train_dir=str(root))["train"]["sample_id"][:2]  # two ids of the training split
    request.write_text("\n".join(ids) + "\n")
    out = tmp_path / "unlearned"
    assert main(["unlearn", "--train_dir", str(root), "--model_name_or_path", str(original),
                 "--forget_ids_file", str(request), "--id_column", "sample_id", "--top_fraction", "0.1",
                 "--max_steps", "1", "--plots", "false", "--disable_tqdm", "true", "--output_dir", str(out)]) == 0
    report = json.loads((out / "unlearning_report.json").read_text())
    assert report["forget"]["size"] == 2
    card = (out / "README.md").read_text()
    assert "| Dataset | shapes |" in card and "digits" not in card
    assert not any(i in card + capsys.readouterr().out for i in ids)
