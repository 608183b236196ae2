import json

import numpy as np
import pytest
import torch

from hf_deepclean.cli import main
from hf_deepclean.images import collate_fn, with_image_transform
from hf_deepclean.training import ARCHITECTURES, TrainConfig, load_classifier, save_classifier, train_classifier


@pytest.mark.parametrize("arch", ["vit", "resnet"])
def test_tiny_models_beat_chance_and_reload_identically(tmp_path, digits, image_processor, arch):
    rng = np.random.default_rng(0)
    train = digits["train"].select(np.sort(rng.choice(len(digits["train"]), 500, replace=False)))
    test = digits["test"].select(range(120))
    model = load_classifier(None, num_labels=10, architecture=arch, seed=0)
    args = TrainConfig(output_dir=str(tmp_path / "run"), num_train_epochs=4, learning_rate=3e-3, seed=0, disable_tqdm=True)
    result = train_classifier(model, train, test, args, image_processor)
    assert result.metrics["eval_accuracy"] > 0.3  # chance is 0.1
    save_classifier(result.model, image_processor, tmp_path / "saved", dataset=train)
    assert (tmp_path / "saved" / "model.safetensors").exists()
    assert (tmp_path / "saved" / "preprocessor_config.json").exists()
    from hf_deepclean.images import load_image_processor

    reloaded = load_classifier(str(tmp_path / "saved"), num_labels=10)
    assert reloaded.config.id2label[3] == "3"
    batch = collate_fn([with_image_transform(test, load_image_processor(str(tmp_path / "saved")))[i] for i in range(16)])
    result.model.eval(), reloaded.eval()
    with torch.no_grad():
        assert torch.equal(result.model(pixel_values=batch["pixel_values"]).logits,
                           reloaded(pixel_values=batch["pixel_values"]).logits)


def test_cli_train_smoke(tmp_path, capsys):
    out = tmp_path / "original"
    code = main(["train", "--output_dir", str(out), "--architecture", "resnet", "--max_steps", "3",
                 "--disable_tqdm", "true"])
    assert code == 0
    assert "test accuracy" in capsys.readouterr().out
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["train_samples"] == 1437 and not summary["gold"]
    assert not (out / "_INCOMPLETE").exists()
    # --gold trains on the retain set only.
    gold = tmp_path / "gold"
    assert main(["train", "--gold", "--forget_labels", "3", "--output_dir", str(gold), "--architecture", "resnet",
                 "--max_steps", "2", "--disable_tqdm", "true"]) == 0
    assert json.loads((gold / "train_summary.json").read_text())["train_samples"] == 1437 - 146


def test_cli_yaml_config_and_flag_override(tmp_path, capsys):
    config = tmp_path / "train.yaml"
    config.write_text("architecture: resnet\nmax_steps: 2\nlearning_rate: 0.01\ndisable_tqdm: true\n")
    out = tmp_path / "from_yaml"
    assert main(["train", "--config", str(config), "--output_dir", str(out), "--max_steps", "1"]) == 0
    state = json.loads((out / "train_summary.json").read_text())
    assert state["train_samples"] == 1437
    bad = tmp_path / "bad.yaml"
    bad.write_text("architectur: resnet\n")
    assert main(["train", "--config", str(bad), "--output_dir", str(tmp_path / "x")]) == 2
    assert "architectur (did you mean architecture?)" in capsys.readouterr().err


def test_cli_usage_and_unknown_command(capsys):
    assert main([]) == 2
    assert main(["--help"]) == 0
    assert "unlearn" in capsys.readouterr().out
    assert main(["forget-everything"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_cli_destroys_the_process_group_when_a_command_ends(tmp_path, capsys):
    """Launched runs leave through main(): the group is destroyed there, also after a user error, so no rank's
    gloo threads are left for the interpreter's teardown (which once aborted a finished rank in CI)."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
        assert "missing.yaml" in capsys.readouterr().err
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_run_image_classification_flag_aliases(tmp_path):
    from hf_deepclean.arguments import DataArguments, parse_arguments

    (data,) = parse_arguments((DataArguments,), ["--image_column_name", "img", "--label_column_name", "fine_label",
                                                 "--train_val_split", "0.2"])
    assert (data.image_column, data.label_column, data.train_val_split) == ("img", "fine_label", 0.2)


class _RecordingTrainer:
    """Stands in for training.train_classifier: records (training samples, recipe) and trains nothing."""

    def __init__(self):
        self.calls = []

    def __call__(self, model, train_dataset, eval_dataset, args, image_processor, **kwargs):
        from hf_deepclean.training import TrainResult, recipe_of

        self.calls.append((len(train_dataset), recipe_of(args)))
        return TrainResult(model=model, metrics={"eval_accuracy": 0.0}, time_s=0.0)


def test_original_and_gold_get_one_recipe_at_every_entry_point(tmp_path, monkeypatch):
    """The gold model is the original's training run on D_r: the same arguments, except the data."""
    from hf_deepclean.arguments import DataArguments, ForgetArguments, ModelArguments
    from hf_deepclean.commands import demo, train
    from hf_deepclean.commands.common import load_run_data
    from hf_deepclean.methods.retrain import RetrainConfig
    from hf_deepclean.training import REPORTING_FIELDS, recipe_of

    # hf-deepclean train, with and without --gold
    cli = _RecordingTrainer()
    monkeypatch.setattr(train, "train_classifier", cli)
    flags = ["--forget_labels", "3", "--seed", "3", "--num_train_epochs", "2"]
    assert main(["train", *flags, "--output_dir", str(tmp_path / "original")]) == 0
    assert main(["train", *flags, "--gold", "--output_dir", str(tmp_path / "gold")]) == 0
    (n_original, original), (n_gold, gold) = cli.calls
    assert original == gold and n_gold < n_original
    assert original["num_train_epochs"] == 2 and original["seed"] == 3

    # the demo's original and gold
    recorded = _RecordingTrainer()
    monkeypatch.setattr(demo, "train_classifier", recorded)
    data = load_run_data(DataArguments(), ForgetArguments(forget_labels=["3"]))
    for role, dataset in (("original", data.train), ("gold", data.retain)):
        demo._train_cached(tmp_path / "demo" / role, data, ModelArguments(), dataset, seed=0)
    (n_original, original), (n_gold, gold) = recorded.calls
    assert original == gold and n_gold < n_original

    # the retrain baseline trains with the same defaults as `train`, which the demo uses
    retrain = recipe_of(RetrainConfig(output_dir="x"))
    assert retrain.pop("base_model") is None and retrain == recipe_of(TrainConfig(output_dir="x"))
    assert original == recipe_of(TrainConfig(output_dir="x", seed=0, use_cpu=not torch.cuda.is_available()))
    assert "output_dir" in REPORTING_FIELDS and "learning_rate" not in REPORTING_FIELDS


def test_a_gold_model_records_what_it_was_trained_without_and_its_recipe(tmp_path):
    out = tmp_path / "gold"
    assert main(["train", "--gold", "--forget_labels", "3", "--max_steps", "1", "--disable_tqdm", "true",
                 "--output_dir", str(out)]) == 0
    summary = json.loads((out / "train_summary.json").read_text())
    forgotten = summary["forgotten"]
    assert forgotten["kind"] == "labels" and forgotten["labels"] == [3] and len(forgotten["rows_sha256"]) == 64
    assert forgotten["size"] == 1437 - summary["train_samples"]
    assert summary["recipe"]["max_steps"] == 1 and summary["recipe"]["learning_rate"] == TrainConfig(output_dir="x").learning_rate


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_every_advertised_architecture_trains_and_unlearns_through_the_cli(tmp_path, architecture):
    """Each value --architecture accepts, through the CLI path a user takes (convnext and deit used to crash)."""
    import warnings

    original = tmp_path / "original"
    assert main(["train", "--architecture", architecture, "--max_steps", "2", "--disable_tqdm", "true",
                 "--output_dir", str(original)]) == 0
    config = json.loads((original / "config.json").read_text())
    assert config["architectures"][0].endswith("ForImageClassification") and len(config["id2label"]) == 10
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["unlearn", "--model_name_or_path", str(original), "--forget_labels", "3", "--top_fraction",
                     "0.1", "--max_steps", "1", "--fisher_max_samples", "16", "--evaluate_original", "false",
                     "--plots", "false", "--disable_tqdm", "true", "--output_dir", str(tmp_path / "unlearned")]) == 0
    # the per-sample Fisher's vmap fallback warning (Swin) means nothing to a user: silenced at its source
    assert not [w for w in caught if "performance drop" in str(w.message)]
    report = json.loads((tmp_path / "unlearned" / "unlearning_report.json").read_text())
    assert 0 < report["selection"]["selected_fraction"] <= 0.1 + 1e-9
    # An auditor diffs the saved files: the mask is keyed like model.safetensors (transformers renames a ViT's or
    # Swin's attention weights when saving) and every entry it leaves unselected is bit for bit the original's.
    from safetensors.torch import load_file

    before, after = load_file(original / "model.safetensors"), load_file(tmp_path / "unlearned" / "model.safetensors")
    mask = load_file(tmp_path / "unlearned" / "_parameter_mask.safetensors")
    assert set(mask) <= set(after) and sum(int(m.sum()) for m in mask.values()) > 0
    for key, selected in mask.items():
        assert torch.equal(before[key][~selected], after[key][~selected]), key
