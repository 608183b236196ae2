"""Reliability and security on a real deletion request: bad inputs, interruptions, determinism, no leaks.

Every bad input goes through the real CLI (``hf_deepclean.cli.main``): exit 2, one ``error:`` line that
names the value and what to do, no traceback, and nothing left in the output folder.
"""

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from hf_deepclean.cli import main
from hf_deepclean.outputs import INCOMPLETE_MARKER, OutputDirError, require_complete
from hf_deepclean.selection import ParameterMask
from hf_deepclean.trainer import MASK_FILE
from hf_deepclean.training import load_classifier, save_classifier

HERE = Path(__file__).parent
ID_PREFIX = "alice-smith-patient-7f3a9"  # distinctive: must never appear in anything an unlearn run writes
CUSTOM_CLASSES = ["zero", "one", "two", "three"]  # "three" has no samples


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def _reuse_digits(monkeypatch, digits):
    # Building digits takes seconds; every CLI run in this module reuses the session's copy.
    import hf_deepclean.data as data

    monkeypatch.setattr(data, "load_builtin_dataset", lambda *args, **kwargs: digits)


def _digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _custom_dataset(digits, per_class_train=20, per_class_test=6):
    """Digits 0-2 under class names, with a ``sample_id`` column of distinctive strings."""
    import datasets

    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=CUSTOM_CLASSES), "sample_id": datasets.Value("string")}
    )

    def build(split, per_class, offset):
        rows = {"image": [], "label": [], "sample_id": []}
        labels = split["label"]
        for c in range(3):
            for i in [i for i, y in enumerate(labels) if y == c][:per_class]:
                rows["image"].append(split[i]["image"])
                rows["label"].append(c)
                rows["sample_id"].append(f"{ID_PREFIX}-{offset + len(rows['sample_id']):04d}")
        return datasets.Dataset.from_dict(rows, features=features)

    return datasets.DatasetDict(train=build(digits["train"], per_class_train, 0),
                                test=build(digits["test"], per_class_test, 5000))


@pytest.fixture(scope="module")
def ws(tmp_path_factory, digits, image_processor):
    """Models, datasets and files shared by the tests; the models are untrained (enough to validate inputs)."""
    import datasets
    import transformers

    root = tmp_path_factory.mktemp("reliability")
    ns = SimpleNamespace(root=root)

    ns.model = root / "model"  # 10 labels, matches digits
    save_classifier(load_classifier(None, num_labels=10, seed=0), image_processor, ns.model, dataset=digits["train"])
    ns.model4 = root / "model4"  # 4 labels, matches the custom dataset, not digits
    custom = _custom_dataset(digits)
    save_classifier(load_classifier(None, num_labels=4, seed=0), image_processor, ns.model4, dataset=custom["train"])

    ns.headless = root / "headless"
    config = transformers.ViTConfig(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=64)
    transformers.ViTModel(config).save_pretrained(ns.headless)

    ns.truncated = root / "truncated"
    shutil.copytree(ns.model, ns.truncated)
    weights = (ns.truncated / "model.safetensors").read_bytes()
    (ns.truncated / "model.safetensors").write_bytes(weights[: len(weights) // 2])

    ns.pickled = root / "pickled"
    shutil.copytree(ns.model, ns.pickled)
    state = load_file(ns.pickled / "model.safetensors")
    (ns.pickled / "model.safetensors").unlink()
    torch.save(state, ns.pickled / "pytorch_model.bin")

    ns.config_only = root / "config_only"
    ns.config_only.mkdir()
    shutil.copy(ns.model / "config.json", ns.config_only / "config.json")

    ns.gold_other = root / "gold_other"  # a gold model that says it was trained without class 5 only
    shutil.copytree(ns.model, ns.gold_other)
    (ns.gold_other / "train_summary.json").write_text(json.dumps(
        {"train_time_s": 1.0, "forgotten": {"kind": "labels", "size": 150, "labels": [5], "rows_sha256": "0" * 64}}))

    ns.unfinished = root / "unfinished"
    shutil.copytree(ns.model, ns.unfinished)
    (ns.unfinished / INCOMPLETE_MARKER).write_text("killed\n")

    # A checkpoint whose config asks for its own code: that code must never run unless trusted.
    ns.remote_code = root / "remote_code"
    shutil.copytree(ns.model, ns.remote_code)
    ns.sentinel = root / "remote_code_ran"
    (ns.remote_code / "evil.py").write_text(f"open({str(ns.sentinel)!r}, 'w').write('ran')\n")
    cfg = json.loads((ns.remote_code / "config.json").read_text())
    cfg["model_type"] = "evil_vit"  # unknown to transformers: only the shipped code could load it
    cfg["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForImageClassification": "evil.EvilModel"}
    (ns.remote_code / "config.json").write_text(json.dumps(cfg))

    ns.custom = root / "custom_ds"
    custom.save_to_disk(str(ns.custom))
    ns.custom_ids = custom["train"]["sample_id"]
    ns.empty = root / "empty_ds"
    datasets.Dataset.from_dict(
        {"image": [], "label": []},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])}),
    ).save_to_disk(str(ns.empty))
    ns.string_labels = root / "string_labels_ds"
    datasets.Dataset.from_dict(
        {"image": [digits["train"][i]["image"] for i in range(8)], "label": ["cat", "dog"] * 4}
    ).save_to_disk(str(ns.string_labels))

    ns.float_labels = root / "float_labels_ds"
    datasets.Dataset.from_dict(
        {"image": [digits["train"][i]["image"] for i in range(8)], "label": [0.5, 1.5] * 4}
    ).save_to_disk(str(ns.float_labels))

    ns.ids_unknown = root / "ids_unknown.txt"
    ns.ids_unknown.write_text(f"{ns.custom_ids[0]}\nNO-SUCH-ID-42\n")
    ns.ids_binary = root / "ids_binary.txt"
    ns.ids_binary.write_bytes(b"\xff\xfe\x00\x81not utf-8")
    ns.bad_yaml = root / "bad.yaml"
    ns.bad_yaml.write_text("forget_labels: [3]\ntop_fractoin: 0.1\n")
    return ns


def _argv(out: Path, ws, **flags) -> list[str]:
    values = {
        "model_name_or_path": ws.model, "forget_labels": "3", "top_fraction": "0.05", "output_dir": out,
        "fisher_max_samples": "8", "max_steps": "2", "disable_tqdm": "true", "evaluate_original": "false",
    }
    values.update(flags)
    argv = ["unlearn"]
    for key, value in values.items():
        if value is None:
            continue
        argv.append(f"--{key}")
        argv += [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
    return argv


# --------------------------------------------------------------------------- bad inputs

# Each case: flags over the default argv (None drops a flag), and fragments the one error line must hold.
BAD_INPUTS = {
    "missing_dataset_path": (lambda ws, tmp: {"dataset_name": tmp / "no_such_dataset"}, ["no_such_dataset", "does not exist"]),
    "empty_dataset": (lambda ws, tmp: {"dataset_name": ws.empty}, ["empty_ds", "empty or damaged"]),
    "empty_dataset_folder": (lambda ws, tmp: {"dataset_name": tmp / "taken" / "sub"}, ["sub", "empty or damaged"]),
    "unknown_split": (lambda ws, tmp: {"train_split": "trian"}, ["'trian'", "--train_split"]),
    "missing_image_column": (lambda ws, tmp: {"image_column": "photo"}, ["'photo'", "--image_column"]),
    "missing_label_column": (lambda ws, tmp: {"label_column": "klass"}, ["'klass'", "--label_column"]),
    "float_labels": (lambda ws, tmp: {"dataset_name": ws.float_labels}, ["'label'", "float", "strings (class names)"]),
    "empty_forget_set": (
        lambda ws, tmp: {"dataset_name": ws.custom, "model_name_or_path": ws.model4, "forget_labels": "three"},
        ["forget set is empty", "three"],
    ),
    "forget_whole_dataset": (lambda ws, tmp: {"forget_labels": [str(i) for i in range(10)]}, ["whole dataset", "fewer"]),
    "unknown_class_name": (lambda ws, tmp: {"forget_labels": "seven"}, ["'seven'", "known classes"]),
    "ids_not_found": (
        lambda ws, tmp: {"dataset_name": ws.custom, "model_name_or_path": ws.model4, "forget_labels": None,
                         "forget_ids_file": ws.ids_unknown, "id_column": "sample_id"},
        ["1 of 2 forget ids", "'sample_id'", "ids file", "--ignore_missing_ids"],
    ),
    "ids_file_missing": (
        lambda ws, tmp: {"forget_labels": None, "forget_ids_file": tmp / "request.txt", "id_column": "sample_id"},
        ["request.txt", "one id per line"],
    ),
    "ids_file_not_text": (
        lambda ws, tmp: {"forget_labels": None, "forget_ids_file": ws.ids_binary, "id_column": "sample_id"},
        ["ids_binary.txt", "UTF-8"],
    ),
    "fraction_above_one": (lambda ws, tmp: {"forget_labels": None, "forget_fraction": "1.5"}, ["fraction=1.5", "between 0 and 1"]),
    "fraction_zero": (lambda ws, tmp: {"forget_labels": None, "forget_fraction": "0"}, ["fraction=0", "between 0 and 1"]),
    "threshold_and_top_fraction": (lambda ws, tmp: {"threshold": "2.0"}, ["exactly one of threshold", "2.0", "top_fraction"]),
    "neither_threshold_nor_top_fraction": (lambda ws, tmp: {"top_fraction": None}, ["exactly one of threshold", "top_fraction"]),
    "threshold_selects_nothing": (
        lambda ws, tmp: {"top_fraction": None, "threshold": "1e30"},
        ["threshold=1e+30", "selects no weight", "largest threshold", "--top_fraction"],
    ),
    "no_classification_head": (lambda ws, tmp: {"model_name_or_path": ws.headless}, ["headless", "no classification head"]),
    "label_count_mismatch": (lambda ws, tmp: {"model_name_or_path": ws.model4}, ["model4", "4 classes", "has 10"]),
    "truncated_checkpoint": (lambda ws, tmp: {"model_name_or_path": ws.truncated}, ["truncated", "corrupt or truncated"]),
    "pickle_checkpoint": (lambda ws, tmp: {"model_name_or_path": ws.pickled}, ["pickled", "pickle", "--allow_pickle"]),
    "remote_code_not_trusted": (lambda ws, tmp: {"model_name_or_path": ws.remote_code}, ["remote_code", "trust_remote_code"]),
    "unfinished_model_folder": (lambda ws, tmp: {"model_name_or_path": ws.unfinished}, ["unfinished", "did not finish"]),
    "output_is_input_model": (lambda ws, tmp: {"output_dir": ws.model}, ["input model folder", "never overwritten"]),
    "non_empty_output": (lambda ws, tmp: {"output_dir": tmp / "taken"}, ["taken", "not empty", "--overwrite_output_dir"]),
    "unknown_flag": (lambda ws, tmp: {"top_fractoin": "0.1"}, ["--top_fractoin", "did you mean --top_fraction"]),
    # issue 23: a typo'd selection flag is named (it used to read "pass exactly one of threshold and top_fraction"),
    # and a prefix is not taken for the flag it starts (argparse's abbreviations)
    "unknown_flag_instead_of_the_selection": (lambda ws, tmp: {"top_fraction": None, "top_fracton": "0.2"},
                                              ["--top_fracton", "did you mean --top_fraction"]),
    "abbreviated_flag": (lambda ws, tmp: {"top_fraction": None, "top_frac": "0.2"},
                         ["--top_frac", "did you mean --top_fraction"]),
    "nothing_to_forget": (lambda ws, tmp: {"forget_labels": None}, ["needs to know what to forget", "--forget_labels"]),
    "model_folder_missing": (lambda ws, tmp: {"model_name_or_path": tmp / "no_model"}, ["no_model", "no such folder"]),
    "model_folder_without_weights": (lambda ws, tmp: {"model_name_or_path": ws.config_only},
                                     ["config_only", "no weights"]),
    "model_folder_without_config": (lambda ws, tmp: {"model_name_or_path": tmp / "taken"},
                                    ["taken", "no config.json"]),
    "image_processor_backend_missing": (lambda ws, tmp: {"image_processor_backend": "torchvision"},
                                        ["torchvision", "hf-deepclean[fast]", "--image_processor_backend pil"]),
    "gold_model_of_another_forget_set": (lambda ws, tmp: {"gold_model": ws.gold_other},
                                         ["--gold_model", "another forget set", "labels [5] here [3]", "train --gold"]),
    "gold_model_missing": (lambda ws, tmp: {"gold_model": tmp / "no_gold"}, ["--gold_model", "no_gold", "no such folder"]),
    "yaml_unknown_key": (
        lambda ws, tmp: {"forget_labels": None, "config": ws.bad_yaml},
        ["bad.yaml", "top_fractoin", "did you mean top_fraction"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_clear_line_and_leaves_nothing(case, ws, tmp_path, capsys):
    from transformers.utils import is_torchvision_available

    if case == "image_processor_backend_missing" and is_torchvision_available():
        pytest.skip("torchvision is installed here")
    make_flags, fragments = BAD_INPUTS[case]
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("user data\n")
    (tmp_path / "taken" / "sub").mkdir()
    flags = make_flags(ws, tmp_path)
    out = Path(flags.get("output_dir", tmp_path / "out"))
    before = _digest(out) if out.exists() else None
    model_before = _digest(ws.model)

    code = main(_argv(tmp_path / "out", ws, **flags))

    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err
    assert len(errors) == 1, err
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    assert "Traceback" not in err
    # Nothing half-written: a new output folder is never created, an existing one is untouched.
    assert (_digest(out) == before) if before is not None else not out.exists()
    assert _digest(ws.model) == model_before
    assert not ws.sentinel.exists()


def test_missing_ids_are_counted_never_echoed_and_can_be_ignored(ws, tmp_path, capsys):
    flags = {"dataset_name": ws.custom, "model_name_or_path": ws.model4, "forget_labels": None,
             "forget_ids_file": ws.ids_unknown, "id_column": "sample_id", "plots": "false"}
    assert main(_argv(tmp_path / "refused", ws, **flags)) == 2
    captured = capsys.readouterr()
    assert "NO-SUCH-ID-42" not in captured.err + captured.out
    assert main(_argv(tmp_path / "out", ws, **flags) + ["--ignore_missing_ids", "true"]) == 0
    captured = capsys.readouterr()
    assert "NO-SUCH-ID-42" not in captured.err + captured.out
    report = json.loads((tmp_path / "out" / "unlearning_report.json").read_text())
    assert report["forget"]["size"] == 1
    assert report["forget"]["ids_requested"] == 2 and report["forget"]["ids_missing"] == 1


def test_debug_shows_the_traceback(ws, tmp_path):
    from hf_deepclean.data import DataError

    with pytest.raises(DataError, match="'seven'"):
        main(_argv(tmp_path / "out", ws, forget_labels="seven") + ["--debug"])
    assert not (tmp_path / "out").exists()


def test_explicit_retain_set_must_not_overlap_the_forget_set(digits):
    from hf_deepclean.data import DataError
    from hf_deepclean.forget import ForgetSpec, split_forget_retain

    data = _custom_dataset(digits, per_class_train=5)["train"]
    ids = data["sample_id"]
    spec = ForgetSpec(ids=ids[:2], id_column="sample_id")
    clean = split_forget_retain(data, spec, retain=data.select(range(2, len(data))))
    assert clean["forget"]["sample_id"] == ids[:2]
    with pytest.raises(DataError, match="2 samples are in both.*'sample_id'.*Remove them"):
        split_forget_retain(data, spec, retain=data)
    with pytest.raises(DataError, match="needs an id column"):
        split_forget_retain(data, ForgetSpec(labels=["zero"]), retain=data.select(range(3)))


def test_trust_remote_code_is_off_unless_asked():
    from hf_deepclean.arguments import ModelArguments, parse_arguments

    assert ModelArguments().trust_remote_code is False
    assert ModelArguments().allow_pickle is False
    (default,) = parse_arguments((ModelArguments,), [])
    (asked,) = parse_arguments((ModelArguments,), ["--trust_remote_code"])
    assert default.trust_remote_code is False and asked.trust_remote_code is True


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_fisher_names_the_parameter_before_touching_weights(bad, tmp_path, digits, image_processor):
    from hf_deepclean.config import DeepCleanConfig
    from hf_deepclean.trainer import DeepCleanTrainer

    model = load_classifier(None, num_labels=10, seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    names = list(before)
    target = names[len(names) // 2]
    fisher_forget = {n: torch.rand_like(p) for n, p in before.items()}
    fisher_forget[target].view(-1)[3] = bad
    args = DeepCleanConfig(output_dir=str(tmp_path / "out"), top_fraction=0.05, use_cpu=True, disable_tqdm=True)
    trainer = DeepCleanTrainer(
        model, args, train_dataset=digits["train"].select(range(8)), forget_dataset=digits["train"].select(range(8, 12)),
        processing_class=image_processor, fisher_forget=fisher_forget,
        fisher_retain={n: torch.ones_like(p) for n, p in before.items()},
    )
    with pytest.raises(ValueError, match=target.replace(".", r"\.")):
        trainer.unlearn()
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert not any(p.is_file() for p in (tmp_path / "out").rglob("*"))


def test_selecting_every_weight_warns(tmp_path, digits, image_processor, caplog):
    from hf_deepclean.config import DeepCleanConfig
    from hf_deepclean.trainer import DeepCleanTrainer

    model = load_classifier(None, num_labels=10, seed=0)
    args = DeepCleanConfig(output_dir=str(tmp_path / "out"), top_fraction=1.0, use_cpu=True, disable_tqdm=True)
    trainer = DeepCleanTrainer(
        model, args, train_dataset=digits["train"].select(range(8)), forget_dataset=digits["train"].select(range(8, 12)),
        processing_class=image_processor,
        fisher_forget={n: torch.ones_like(p) for n, p in model.named_parameters()},
        fisher_retain={n: torch.ones_like(p) for n, p in model.named_parameters()},
    )
    with caplog.at_level("WARNING", logger="hf_deepclean.selection"):
        mask = trainer.select()
    assert mask.num_selected == mask.num_total
    assert "covers every weight" in caplog.text


# --------------------------------------------------------------------------- interruption


def _wait_for(predicate, timeout_s, proc=None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc is not None and proc.poll() is not None:
            return predicate()
        time.sleep(0.1)
    return False


def test_killed_run_never_looks_finished_and_resumes_with_the_same_mask(ws, tmp_path, capsys, caplog):
    out = tmp_path / "out"
    argv = _argv(out, ws, top_fraction="0.05", max_steps="12", save_strategy="steps", save_steps="2",
                 logging_strategy="no", per_device_train_batch_size="16")
    first_mask = out / "checkpoint-2" / MASK_FILE
    env = dict(os.environ, HF_DEEPCLEAN_STEP_DELAY="0.4", HF_HUB_OFFLINE="1")
    log = (tmp_path / "worker.log").open("w")
    proc = subprocess.Popen([sys.executable, str(HERE / "_kill_worker.py"), *argv], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        found = _wait_for(first_mask.exists, 120, proc)
        time.sleep(0.2)  # the mask is written by the on_save callback; let it land before the crash
        still_running = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert found and still_running, (tmp_path / "worker.log").read_text()[-3000:]

    # The killed run's folder never looks finished: loaders and push refuse it.
    assert (out / INCOMPLETE_MARKER).exists()
    with pytest.raises(OutputDirError, match="did not finish"):
        require_complete(out)
    capsys.readouterr()
    assert main(["push", str(out), "--repo_id", "someone/model"]) == 2
    assert "did not finish" in capsys.readouterr().err

    checkpoint = out / "checkpoint-2"
    saved_mask = ParameterMask.load(checkpoint / MASK_FILE)
    caplog.set_level("INFO", logger="hf_deepclean.trainer")
    assert main(argv + ["--resume_from_checkpoint", str(checkpoint)]) == 0
    assert "Resuming with the mask saved in" in caplog.text
    assert not (out / INCOMPLETE_MARKER).exists()
    require_complete(out)
    final_mask = ParameterMask.load(out / MASK_FILE)
    assert set(final_mask.names) == set(saved_mask.names)
    assert all(torch.equal(final_mask[n], saved_mask[n]) for n in saved_mask.names)
    state = json.loads((out / "checkpoint-12" / "trainer_state.json").read_text())
    assert state["global_step"] == 12
    # Frozen weights are bit-identical to the original model; the selected ones were trained.
    original, final = (
        {n: p.detach() for n, p in load_classifier(str(path), num_labels=10).named_parameters()} for path in (ws.model, out)
    )
    assert original.keys() == final.keys() == set(saved_mask.names)
    changed_selected = 0
    for name in saved_mask.names:
        mask = saved_mask[name]
        assert torch.equal(final[name][~mask], original[name][~mask]), name
        changed_selected += int((final[name][mask] != original[name][mask]).sum())
    assert changed_selected > 0


# --------------------------------------------------------------------------- determinism


def _deepclean_run(output_dir, digits, image_processor):
    from hf_deepclean.config import DeepCleanConfig
    from hf_deepclean.forget import ForgetSpec, forget_indices, split_forget_retain
    from hf_deepclean.trainer import DeepCleanTrainer

    data = digits["train"].select(range(200))
    spec = ForgetSpec(fraction=0.1, seed=7)
    splits = split_forget_retain(data, spec)
    model = load_classifier(None, num_labels=10, seed=0)
    args = DeepCleanConfig(
        output_dir=str(output_dir), top_fraction=0.05, max_steps=3, per_device_train_batch_size=16, seed=3,
        fisher_max_samples=24, use_cpu=True, disable_tqdm=True, logging_strategy="no",
    )
    trainer = DeepCleanTrainer(model, args, train_dataset=splits["retain"], forget_dataset=splits["forget"],
                               processing_class=image_processor)
    trainer.unlearn()
    return forget_indices(data, spec), trainer.parameter_mask, {n: p.detach().clone() for n, p in model.named_parameters()}


def test_same_seed_gives_same_split_mask_and_weights(tmp_path, digits, image_processor):
    split_a, mask_a, weights_a = _deepclean_run(tmp_path / "a", digits, image_processor)
    split_b, mask_b, weights_b = _deepclean_run(tmp_path / "b", digits, image_processor)
    assert split_a.tolist() == split_b.tolist()
    assert mask_a.num_selected == mask_b.num_selected > 0
    assert all(torch.equal(mask_a[n], mask_b[n]) for n in mask_a.names)
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[n], weights_b[n]) for n in weights_a)


# --------------------------------------------------------------------------- no leaks


def test_unlearn_run_writes_no_forget_ids_or_file_names(ws, tmp_path, capsys):
    forgotten = ws.custom_ids[:3] + ws.custom_ids[-2:]
    request = tmp_path / "deletion-request-from-alice.txt"
    request.write_text("\n".join(forgotten) + "\n")
    out = tmp_path / "out"
    argv = _argv(out, ws, dataset_name=ws.custom, model_name_or_path=ws.model4, forget_labels=None,
                 forget_ids_file=request, id_column="sample_id", save_strategy="steps", save_steps="1",
                 save_fisher="true", evaluate_original="true")
    assert main(argv) == 0
    captured = capsys.readouterr()

    report = json.loads((out / "unlearning_report.json").read_text())
    assert report["forget"]["size"] == len(forgotten)
    assert report["forget"]["fingerprint"]
    written = [p for p in out.rglob("*") if p.is_file()]
    assert (out / "README.md") in written and (out / "unlearning_report.json") in written
    assert any("checkpoint-" in str(p) for p in written)
    secrets = [*forgotten, ID_PREFIX, request.name, request.stem]
    charts = {"fisher_ratio_histogram.png", "fraction_vs_threshold.png", "metrics_comparison.png"}
    for path in written:
        # no image of a sample: the only pictures are the charts of the plots
        assert path.suffix.lower() not in (".png", ".jpg", ".jpeg") or path.relative_to(out).name in charts, path
        content = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in content, f"{secret!r} leaked into {path.relative_to(out)}"
            assert secret not in str(path.relative_to(out))
    for secret in secrets:
        assert secret not in captured.out and secret not in captured.err


# --------------------------------------------------------------------------- top_fraction=auto through the CLI


@pytest.mark.parametrize("forget, kind", [({"forget_labels": "3"}, "class"),
                                          ({"forget_labels": None, "noisy_fraction": "0.05"}, "noisy_labels")])
def test_unlearn_auto_records_its_criterion_and_attempts(ws, tmp_path, capsys, caplog, forget, kind):
    # --noisy_fraction makes auto judge agreement with the wrong labels (the labels alone look like samples).
    out = tmp_path / "out"
    argv = _argv(out, ws, top_fraction="auto", auto_fractions=["0.05", "0.3"], **forget)
    with caplog.at_level("WARNING", logger="hf_deepclean"):
        assert main(argv) == 0
    # Mislabeled samples with a fixed budget: the run points to the budget rule.
    assert ("--early_stopping_patience 2 --num_train_epochs 8" in caplog.text) == (kind == "noisy_labels")
    notes = [n for n in json.loads((out / "unlearning_report.json").read_text())["notes"] if "top_fraction=auto" in n]
    assert len(notes) == 1
    notes = notes[0]
    assert f"top_fraction=auto ({kind} forgetting) chose" in notes
    assert re.search(r"Fine-tuned: 0\.(05|3): ", notes), notes
    assert ("verified after the fine-tune" in notes) != ("NOT verified" in notes)
    assert not re.search(r"[^.]\.\.(?!\.)", notes), notes  # no doubled full stop (an ellipsis is fine)
    card = (out / "README.md").read_text()
    assert "top_fraction=auto" in card
    # auto's total time broken down (issue 23): its sweep and verifications are their own line, not hidden in total
    time_s = json.loads((out / "unlearning_report.json").read_text())["time_s"]
    assert time_s["auto_search"] > 0
    assert time_s["total"] >= time_s["fisher"] + time_s["train"] + time_s["auto_search"] - 1e-6
    assert "top_fraction=auto's reset-only sweep and verifications" in card


def test_the_budget_note_names_the_validation_split_once_when_auto_already_did():
    from hf_deepclean.budget import describe_budget as early_stopping_note

    stats = {"early_stopping_stopped_early": True, "early_stopping_epochs_run": 5, "early_stopping_best_epoch": 3,
             "early_stopping_metric": "eval_loss", "early_stopping_best_value": 0.25}
    args = SimpleNamespace(num_train_epochs=8, early_stopping_patience=2)
    alone = early_stopping_note(stats, args, "180 images carved off the test split.")
    assert alone.endswith("stopped after epoch 5 and kept epoch 3, the best eval_loss (0.2500). Validation: 180 images "
                          "carved off the test split.")
    assert early_stopping_note(stats, args, None).endswith("Validation: the same split as top_fraction=auto.")


def test_unlearn_early_stopping_carves_validation_and_records_the_budget(ws, tmp_path, capsys):
    """--early_stopping_patience: a validation part comes off the test split (out of the report's test metrics),
    evaluations run at eval_strategy's pace, and the report and card say where it stopped and which step it kept."""
    out = tmp_path / "out"
    argv = _argv(out, ws, max_steps="4", early_stopping_patience="1", eval_strategy="steps", eval_steps="1")
    assert main(argv) == 0
    report = json.loads((out / "unlearning_report.json").read_text())
    notes = [n for n in report["notes"] if n.startswith("Fine-tune budget")]
    assert len(notes) == 1, report["notes"]
    assert re.search(r"(stopped after epoch [0-9.]+|ran the whole [0-9.]+ epochs) and kept epoch [0-9.]+, the best "
                     r"eval_loss \([0-9.]+\)\. Validation: \d+ images carved", notes[0]), notes[0]
    assert "Fine-tune budget" in (out / "README.md").read_text()
    full = main(_argv(tmp_path / "fixed", ws, max_steps="4"))
    assert full == 0
    fixed = json.loads((tmp_path / "fixed" / "unlearning_report.json").read_text())
    # the carved half is not in the test metrics: fewer test images than the fixed-budget run's
    assert report["config"]["test_size"] < fixed["config"]["test_size"], (report["config"], fixed["config"])
