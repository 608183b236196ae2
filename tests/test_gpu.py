"""Checks that need a CUDA GPU (skipped elsewhere; CI has none): bf16 masking and FSDP2 on the GPU.

Run them with `python -m pytest -m gpu tests/test_gpu.py` on a machine with a GPU (benchmarks/gpu_checks.sh
runs them with the GPU benchmarks). The CPU suite covers the same paths on CPU: bf16 autocast in
test_trainer.py, FSDP2 with gloo in test_fsdp2.py.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from _fisher_models import count_weight_changes, random_dataset
from _two_processes import subprocess_env
from hf_deepclean.config import DeepCleanConfig
from hf_deepclean.trainer import DeepCleanTrainer
from hf_deepclean.training import load_classifier

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _unlearn_on_gpu(tmp_path, model, **overrides):
    args = DeepCleanConfig(
        output_dir=str(tmp_path / "out"), top_fraction=0.1, num_train_epochs=2, per_device_train_batch_size=8,
        weight_decay=0.1, gradient_accumulation_steps=2, max_grad_norm=1.0, learning_rate=1e-2, use_cpu=False,
        disable_tqdm=True, report_to="none", logging_strategy="no", save_strategy="no", fisher_batch_size=16,
        **overrides,
    )
    trainer = DeepCleanTrainer(model, args, train_dataset=random_dataset(64, (3, 16, 16), 4, seed=0),
                               forget_dataset=random_dataset(16, (3, 16, 16), 4, seed=1))
    trainer.unlearn()
    return trainer


@pytest.mark.parametrize("kernels", ["multi_tensor", "per_tensor"])
@pytest.mark.parametrize("arch", ["vit", "resnet"])
def test_bf16_autocast_on_gpu_keeps_frozen_weights_exact(tmp_path, arch, kernels):
    model = load_classifier(None, num_labels=4, architecture=arch, seed=0)
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = _unlearn_on_gpu(tmp_path, model, bf16=True, mask_kernels=kernels)
    assert next(model.parameters()).device.type == "cuda"
    multi_tensor = trainer.unlearning_stats["multi_tensor_masked_tensors"]
    assert (multi_tensor > 0) if kernels == "multi_tensor" else (multi_tensor == 0)
    frozen, selected = count_weight_changes(dict(model.named_parameters()), original, trainer.parameter_mask)
    assert frozen == 0
    assert selected > 0.5 * trainer.parameter_mask.num_selected


def test_bf16_weights_on_gpu_keep_frozen_weights_exact(tmp_path):
    """Weights stored in bfloat16 (not autocast): the restore must write back the exact bf16 bit patterns."""
    model = load_classifier(None, num_labels=4, architecture="vit", seed=0).to(torch.bfloat16)
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = _unlearn_on_gpu(tmp_path, model)
    assert next(model.parameters()).dtype == torch.bfloat16
    assert trainer.unlearning_stats["multi_tensor_masked_tensors"] > 0  # int16 bit patterns
    frozen, selected = count_weight_changes(dict(model.named_parameters()), original, trainer.parameter_mask)
    assert frozen == 0
    assert selected > 0.5 * trainer.parameter_mask.num_selected


@pytest.mark.timeout(600)
@pytest.mark.parametrize("arch,precision", [("vit", "bf16"), ("resnet", "no"), ("resnet", "bf16")])
def test_fsdp2_on_one_gpu_with_trainer_checkpoints(tmp_path, arch, precision):
    """recipes/accelerate/fsdp2.yaml on one GPU: accelerate's own FSDP2 path, mixed precision, Trainer's checkpoints.

    FSDP2 with bf16 on a BatchNorm model (the ResNet) must be refused up front with the way out in the message.
    """
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "recipes" / "accelerate" / "fsdp2.yaml"), "--num_processes", "1", "--mixed_precision", precision,
           str(ROOT / "tests" / "_fsdp2_worker.py"), str(tmp_path), arch, "gpu", precision]
    proc = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=540)
    if arch == "resnet" and precision == "bf16":
        assert proc.returncode != 0
        assert "FSDP2 with bf16 mixed precision fails on models with BatchNorm" in proc.stdout + proc.stderr
        return
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "fsdp2_result.json").read_text())
    print(json.dumps(result))
    assert result["sharded"] == result["num_params"]  # accelerate really sharded every parameter
    assert result["bound"] > 0
    assert result["multi_tensor"] == 0  # shards take the per-tensor hooks, even where the GPU default is multi-tensor
    assert result["frozen_changed"] == 0
    assert result["selected_changed"] > 0.5 * result["num_selected"]
    assert result["checkpoints"], "Trainer wrote no checkpoint under FSDP2"
    for name, checkpoint in result["checkpoints"].items():
        assert "model.safetensors" in checkpoint["files"], name
        assert checkpoint["missing_names"] == checkpoint["unknown_names"] == [], name
        assert checkpoint["frozen_changed"] == 0, name
    # the last checkpoint is written at the last step: it must hold the final model
    assert result["checkpoints"][max(result["checkpoints"], key=lambda n: int(n.split("-")[1]))][
        "entries_differing_from_final"] == 0
