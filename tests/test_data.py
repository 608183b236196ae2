import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_deepclean.data import DataError, load_image_dataset, resolve_columns
from hf_deepclean.forget import ForgetSpec, apply_label_noise, forget_indices, read_ids_file, split_forget_retain
from hf_deepclean.images import collate_fn, with_image_transform


def _toy(n=40, num_classes=4):
    import datasets
    from PIL import Image

    images = [Image.new("RGB", (8, 8), color=(i % 255, 0, 0)) for i in range(n)]
    return datasets.Dataset.from_dict(
        {"image": images, "label": [i % num_classes for i in range(n)], "sample_id": [f"s{i:03d}" for i in range(n)]},
        features=datasets.Features(
            {
                "image": datasets.Image(),
                "label": datasets.ClassLabel(names=[f"c{i}" for i in range(num_classes)]),
                "sample_id": datasets.Value("string"),
            }
        ),
    )


def test_builtin_digits(digits):
    assert len(digits["train"]) + len(digits["test"]) == 1797
    assert len(digits["test"]) == 360
    assert digits["train"].features["label"].names == [str(i) for i in range(10)]
    image = digits["train"][0]["image"]
    assert image.size == (16, 16) and image.mode == "RGB"
    # Stratified: every class keeps roughly its share in the test split.
    counts = np.bincount(list(digits["test"]["label"]), minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38


def test_builtin_digits_is_deterministic(digits):
    from hf_deepclean.data import load_builtin_dataset

    again = load_builtin_dataset("digits")
    assert list(again["test"]["label"]) == list(digits["test"]["label"])


def _check_partition(dataset, splits, expected_forget):
    ids = list(dataset["sample_id"])
    forget, retain = list(splits["forget"]["sample_id"]), list(splits["retain"]["sample_id"])
    assert not set(forget) & set(retain)
    assert sorted(forget + retain) == sorted(ids)
    assert sorted(forget) == sorted(ids[i] for i in expected_forget)


def test_forget_by_label_ids_and_names():
    toy = _toy()
    by_id = split_forget_retain(toy, ForgetSpec(labels=[1]))
    by_name = split_forget_retain(toy, ForgetSpec(labels=["c1"]))
    assert set(list(by_id["forget"]["label"])) == {1}
    assert list(by_id["forget"]["sample_id"]) == list(by_name["forget"]["sample_id"])
    _check_partition(toy, by_id, [i for i in range(40) if i % 4 == 1])


def test_forget_by_fraction_is_seeded_and_stratifiable():
    toy = _toy()
    a = split_forget_retain(toy, ForgetSpec(fraction=0.25, seed=3))
    b = split_forget_retain(toy, ForgetSpec(fraction=0.25, seed=3))
    c = split_forget_retain(toy, ForgetSpec(fraction=0.25, seed=4))
    assert list(a["forget"]["sample_id"]) == list(b["forget"]["sample_id"]) != list(c["forget"]["sample_id"])
    assert len(a["forget"]) == 10
    strat = split_forget_retain(toy, ForgetSpec(fraction=0.5, seed=0, stratified=True))
    assert np.bincount(list(strat["forget"]["label"])).tolist() == [5, 5, 5, 5]


def test_forget_by_indices_and_ids(tmp_path):
    toy = _toy()
    _check_partition(toy, split_forget_retain(toy, ForgetSpec(indices=[0, 5, 7])), [0, 5, 7])
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("# deletion request 42\ns001\n\ns010\n", encoding="utf-8")
    ids = read_ids_file(ids_file)
    assert ids == ["s001", "s010"]
    _check_partition(toy, split_forget_retain(toy, ForgetSpec(ids=ids, id_column="sample_id")), [1, 10])


def test_noisy_labels_relabel_exactly_the_forget_set():
    toy = _toy()
    spec = ForgetSpec(noisy_fraction=0.2, seed=1)
    noisy = apply_label_noise(toy, spec)
    idx = forget_indices(toy, spec)
    changed = np.flatnonzero(np.asarray(list(noisy["label"])) != np.asarray(list(toy["label"])))
    assert changed.tolist() == idx.tolist() and len(idx) == 8
    splits = split_forget_retain(toy, spec)
    assert list(splits["forget"]["label"]) == [list(noisy["label"])[i] for i in idx]
    assert noisy.features["label"] == toy.features["label"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(labels=[9]), "Unknown label"),
        (dict(labels=["zebra"]), "Unknown class name 'zebra'"),
        (dict(fraction=0.0), "fraction=0.0"),
        (dict(fraction=1.5), "fraction=1.5"),
        (dict(noisy_fraction=1.0), "noisy_fraction=1.0"),
        (dict(indices=[100]), "out of range"),
        (dict(ids=["nope", "s001"], id_column="sample_id"), "1 of 2 forget ids were not found"),
        (dict(ids=["s001"], id_column="missing"), "id column 'missing' not found"),
        (dict(labels=[0, 1, 2, 3]), "covers the whole dataset"),
        (dict(labels=[]), "is empty"),
        (dict(), "exactly one of"),
        (dict(labels=[1], fraction=0.1), "exactly one of"),
    ],
)
def test_split_errors_name_the_value(kwargs, message):
    with pytest.raises(DataError, match=message):
        split_forget_retain(_toy(), ForgetSpec(**kwargs))


def test_empty_forget_set_errors():
    toy = _toy().filter(lambda label: label != 2, input_columns=["label"])
    with pytest.raises(DataError, match="forget set is empty"):
        split_forget_retain(toy, ForgetSpec(labels=[2]))


def test_unreadable_ids_file(tmp_path):
    with pytest.raises(DataError, match="Cannot read forget ids file"):
        read_ids_file(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("\n# only a comment\n")
    with pytest.raises(DataError, match="holds no ids"):
        read_ids_file(tmp_path / "empty.txt")


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(min_value=4, max_value=60),
    fraction=st.floats(min_value=0.05, max_value=0.9),
    seed=st.integers(min_value=0, max_value=1000),
)
def test_fraction_split_properties(n, fraction, seed):
    import datasets

    ds = datasets.Dataset.from_dict(
        {"label": [i % 3 for i in range(n)], "sample_id": list(range(n))},
        features=datasets.Features({"label": datasets.ClassLabel(names=["a", "b", "c"]), "sample_id": datasets.Value("int64")}),
    )
    k = int(round(fraction * n))
    spec = ForgetSpec(fraction=fraction, seed=seed)
    if k == 0 or k == n:
        with pytest.raises(DataError):
            split_forget_retain(ds, spec)
        return
    splits = split_forget_retain(ds, spec)
    forget, retain = list(splits["forget"]["sample_id"]), list(splits["retain"]["sample_id"])
    assert len(forget) == k
    assert sorted(forget + retain) == list(range(n))
    assert list(split_forget_retain(ds, spec)["forget"]["sample_id"]) == forget


@settings(max_examples=30, deadline=None)
@given(indices=st.lists(st.integers(min_value=0, max_value=29), min_size=1, max_size=29, unique=True))
def test_index_split_properties(indices):
    import datasets

    ds = datasets.Dataset.from_dict({"label": [0, 1] * 15, "sample_id": list(range(30))}).cast_column(
        "label", datasets.ClassLabel(names=["a", "b"])
    )
    splits = split_forget_retain(ds, ForgetSpec(indices=indices))
    assert sorted(list(splits["forget"]["sample_id"])) == sorted(indices)
    assert set(list(splits["retain"]["sample_id"])) == set(range(30)) - set(indices)


def test_column_detection_and_errors():
    import datasets

    toy = _toy()
    assert resolve_columns(toy) == ("image", "label")
    with pytest.raises(DataError, match="Image column 'pic' not found"):
        resolve_columns(toy, image_column="pic")
    with pytest.raises(DataError, match="Label column 'y' not found"):
        resolve_columns(toy, label_column="y")
    no_image = datasets.Dataset.from_dict({"x": [1, 2], "label": [0, 1]})
    with pytest.raises(DataError, match="no image column"):
        resolve_columns(no_image)


def test_local_formats_and_renamed_columns(tmp_path):
    import datasets

    toy = _toy().rename_columns({"image": "img", "label": "fine_label"})
    toy.save_to_disk(str(tmp_path / "saved"))
    loaded = load_image_dataset(str(tmp_path / "saved"), train_val_split=0.25)
    assert set(loaded) == {"train", "test"}
    assert {"image", "label"} <= set(loaded["train"].column_names)
    assert len(loaded["train"]) + len(loaded["test"]) == 40

    toy.to_parquet(str(tmp_path / "data.parquet"))
    parquet = load_image_dataset(str(tmp_path / "data.parquet"), image_column="img", label_column="fine_label")
    assert len(parquet["train"]) + len(parquet["test"]) == 40

    folder = tmp_path / "folder"
    for i in range(12):
        (folder / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
        _toy(1)[0]["image"].save(folder / f"class{i % 2}" / f"{i}.png")
    images = load_image_dataset(train_dir=str(folder), train_val_split=0.5)
    assert images["train"].features["label"].names == ["class0", "class1"]

    strings = datasets.Dataset.from_dict({"image": [_toy(1)[0]["image"]] * 4, "label": ["b", "a"] * 2})
    strings.save_to_disk(str(tmp_path / "strings"))  # class names as strings: classes in sorted order
    assert load_image_dataset(str(tmp_path / "strings"), train_val_split=0.5)["train"].features["label"].names == ["a", "b"]
    floats = datasets.Dataset.from_dict({"image": [_toy(1)[0]["image"]] * 2, "label": [0.5, 1.5]})
    floats.save_to_disk(str(tmp_path / "floats"))
    with pytest.raises(DataError, match="labels must be integers, strings"):
        load_image_dataset(str(tmp_path / "floats"))


def test_hub_name_offline_says_how_to_pass_a_local_copy(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="Pass a local copy instead"):
        load_image_dataset("someone/not-a-local-dataset")


def test_unknown_split(tmp_path):
    _toy().save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(DataError, match="Split 'nope' not found"):
        load_image_dataset(str(tmp_path / "saved"), train_split="nope")


def test_transform_and_collate(digits, image_processor):
    transformed = with_image_transform(digits["test"], image_processor)
    batch = collate_fn([transformed[i] for i in range(5)])
    assert batch["pixel_values"].shape == (5, 3, 16, 16)
    assert batch["labels"].tolist() == list(digits["test"]["label"])[:5]


def test_training_seed_never_changes_the_split():
    # Regression: the split once followed TrainingArguments.seed (42), so `unlearn` evaluated on images
    # the original model had trained on.
    from hf_deepclean.arguments import DataArguments, ForgetArguments
    from hf_deepclean.commands.common import load_run_data

    a = load_run_data(DataArguments(), ForgetArguments(forget_labels=["3"]), seed=0)
    b = load_run_data(DataArguments(), ForgetArguments(forget_labels=["3"]), seed=42)
    assert list(a.test["label"]) == list(b.test["label"])
    assert [x.tobytes() for x in a.test["image"][:20]] == [x.tobytes() for x in b.test["image"][:20]]
    other = load_run_data(DataArguments(split_seed=1), ForgetArguments(forget_labels=["3"]))
    assert [x.tobytes() for x in other.test["image"][:20]] != [x.tobytes() for x in a.test["image"][:20]]
