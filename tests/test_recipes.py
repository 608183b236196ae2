"""Every recipe parses into the dataclasses of the command that runs it, with no typo and no default restated."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from hf_deepclean.arguments import DataArguments, ForgetArguments, ModelArguments, parse_arguments
from hf_deepclean.commands.train import TrainScriptArguments
from hf_deepclean.commands.unlearn import UnlearnScriptArguments
from hf_deepclean.config import DeepCleanConfig
from hf_deepclean.training import TrainConfig

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
ACCELERATE = RECIPES / "accelerate"
TRAIN_TYPES = (ModelArguments, DataArguments, ForgetArguments, TrainScriptArguments, TrainConfig)
UNLEARN_TYPES = (ModelArguments, DataArguments, ForgetArguments, UnlearnScriptArguments, DeepCleanConfig)

RUN_RECIPES = sorted(p for p in RECIPES.rglob("*.yaml") if ACCELERATE not in p.parents)
ACCELERATE_CONFIGS = sorted(ACCELERATE.glob("*.yaml"))


def _command_types(path: Path):
    # train.yaml / train_*.yaml feed `hf-deepclean train`; every other recipe feeds `unlearn`.
    return TRAIN_TYPES if path.stem.split("_")[0] == "train" else UNLEARN_TYPES


def _rel(path: Path) -> str:
    return str(path.relative_to(RECIPES))


def _top_level_lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if re.match(r"^[A-Za-z_]\w*:", line)]


def test_the_expected_recipes_exist():
    names = {_rel(p) for p in RUN_RECIPES}
    for model in ("vit", "resnet"):
        for scenario in ("train", "train_noisy", "class", "random", "noisy_labels"):
            assert f"digits/{model}/{scenario}.yaml" in names
    for name in ("cifar10/vit-b16/class.yaml", "cifar10/vit-b16/random.yaml", "cifar10/resnet18/class.yaml",
                 "cifar10/resnet18/random.yaml", "cifar100/resnet18/class.yaml", "cifar10/timm-resnet18/class.yaml"):
        assert name in names
    assert {p.stem for p in ACCELERATE_CONFIGS} >= {"single_gpu", "multi_gpu_ddp", "fsdp2", "deepspeed_zero2", "cpu_2proc"}


@pytest.mark.parametrize("path", RUN_RECIPES, ids=_rel)
def test_recipe_parses_into_its_command_dataclasses(path):
    types = _command_types(path)
    instances = parse_arguments(types, ["--config", str(path)])
    values = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert values, f"{_rel(path)} is empty"
    for key, value in values.items():
        owners = [x for x in instances if key in {f.name for f in dataclasses.fields(x)}]
        assert owners, f"{_rel(path)}: {key} belongs to no dataclass of the command"
        parsed = getattr(owners[0], key)
        if isinstance(value, list):
            assert [str(v) for v in parsed] == [str(v) for v in value], key
        else:
            assert parsed == value or str(parsed) == str(value), f"{_rel(path)}: {key}={parsed!r}, YAML says {value!r}"


@pytest.mark.parametrize("path", RUN_RECIPES, ids=_rel)
def test_recipe_holds_only_non_default_settings_each_with_a_comment(path):
    defaults = {}
    for dtype in _command_types(path):
        for f in dataclasses.fields(dtype):
            if f.default is not dataclasses.MISSING:
                defaults.setdefault(f.name, f.default)
    values = yaml.safe_load(path.read_text(encoding="utf-8"))
    for key, value in values.items():
        assert key not in defaults or defaults[key] != value, f"{_rel(path)}: {key}: {value!r} restates the default"
    for line in _top_level_lines(path):
        assert "#" in line, f"{_rel(path)}: no comment on {line!r}"


def test_unlearn_recipes_read_the_model_a_train_recipe_writes():
    written = {}
    for path in RUN_RECIPES:
        if _command_types(path) is TRAIN_TYPES:
            written[yaml.safe_load(path.read_text(encoding="utf-8"))["output_dir"]] = path
    for path in RUN_RECIPES:
        if _command_types(path) is UNLEARN_TYPES:
            values = yaml.safe_load(path.read_text(encoding="utf-8"))
            model = values["model_name_or_path"]
            if model.startswith("runs/"):
                assert model in written, f"{_rel(path)} reads {model}, which no train recipe writes"
                train = yaml.safe_load(written[model].read_text(encoding="utf-8"))
                # the noisy original must be trained on exactly the labels the recipe then forgets
                assert train.get("noisy_fraction") == values.get("noisy_fraction"), _rel(path)
                for key in ("dataset_name", "label_column"):
                    assert train.get(key) == values.get(key), f"{_rel(path)}: {key} differs from its train recipe"
            assert values["output_dir"] != model


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=lambda p: p.name)
def test_accelerate_config_loads_with_accelerates_own_reader(path):
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.utils import DistributedType

    config = load_config_from_file(str(path))  # raises on keys accelerate does not know
    assert isinstance(config, ClusterConfig)
    assert isinstance(config.distributed_type, DistributedType)
    assert config.num_processes >= 1 and config.num_machines >= 1
    expected = {"single_gpu": DistributedType.NO, "multi_gpu_ddp": DistributedType.MULTI_GPU,
                "fsdp2": DistributedType.FSDP, "deepspeed_zero2": DistributedType.DEEPSPEED,
                "cpu_2proc": DistributedType.MULTI_GPU}[path.stem]
    assert config.distributed_type == expected
    if path.stem == "fsdp2":
        assert int(config.fsdp_config["fsdp_version"]) == 2
    if path.stem == "deepspeed_zero2":
        assert config.deepspeed_config["zero_stage"] == 2
    if path.stem == "cpu_2proc":
        assert config.use_cpu and config.num_processes == 2 and config.mixed_precision == "no"
    for line in _top_level_lines(path):
        value = line.split(":", 1)[1].strip()
        assert "#" in line or value == "", f"{path.name}: no comment on {line!r}"
