"""Launched by test_fsdp2.py (2 CPU processes) and test_gpu.py (GPUs): DeepCleanTrainer under FSDP2 keeps frozen weights exact.

    accelerate launch ... _fsdp2_worker.py OUTPUT_DIR {vit,resnet} [cpu|gpu] [bf16|no]

accelerate switches FSDP on only for GPU-like process types and silently runs DDP on CPU processes,
so this worker turns on, after the Accelerator is built, exactly what accelerate sets on GPUs
(distributed type FSDP and the plugin Trainer built from ``--fsdp``). Everything after that is the
real path: accelerate's fsdp2_prepare_model calls ``fully_shard`` (gloo, CPU mesh) with the settings of
recipes/accelerate/fsdp2.yaml, Trainer's loop trains the DTensor shards, DeepClean's callback binds the
mask to them, and the model is gathered and written as `hf-deepclean unlearn` does; the checks run on
the written model, reloaded with from_pretrained.

In ``gpu`` mode accelerate turns FSDP on itself; the run then uses the given mixed precision (bf16 by
default) and writes Trainer's own checkpoints every 2 steps, whose frozen weights are checked too.
"""

import json
import os
import sys
from pathlib import Path

import torch
import yaml
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from torch.distributed.tensor import DTensor
from transformers import AutoModelForImageClassification

sys.path.insert(0, os.path.dirname(__file__))
from _fisher_models import count_weight_changes, random_dataset  # noqa: E402
from hf_deepclean.config import DeepCleanConfig
from hf_deepclean.images import load_image_processor
from hf_deepclean.selection import ParameterMask
from hf_deepclean.trainer import MASK_FILE, DeepCleanTrainer
from hf_deepclean.training import load_classifier, save_classifier


class CpuFsdp2Trainer(DeepCleanTrainer):
    def create_accelerator_and_postprocess(self):
        super().create_accelerator_and_postprocess()
        state = self.accelerator.state
        state.distributed_type = DistributedType.FSDP
        state.fsdp_plugin = FullyShardedDataParallelPlugin(**self.args.fsdp_plugin_args)
        self.is_fsdp_enabled = True


def recipe_fsdp_config() -> dict:
    """The FSDP settings of recipes/accelerate/fsdp2.yaml (wrap policy, resharding, loading), as Trainer reads them."""
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "recipes" / "accelerate" / "fsdp2.yaml").read_text())
    return dict(config["fsdp_config"])


if __name__ == "__main__":
    output_dir, arch = sys.argv[1], sys.argv[2]
    on_gpu = len(sys.argv) > 3 and sys.argv[3] == "gpu"
    bf16 = on_gpu and torch.cuda.is_available() and (len(sys.argv) <= 4 or sys.argv[4] == "bf16")
    model = load_classifier(None, num_labels=4, architecture=arch, seed=0)
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    gpu_settings = dict(bf16=bf16, save_strategy="steps", save_steps=2) if on_gpu else dict(save_strategy="no")
    args = DeepCleanConfig(
        output_dir=output_dir, top_fraction=0.1, num_train_epochs=1, per_device_train_batch_size=4,
        weight_decay=0.1, gradient_accumulation_steps=2, max_grad_norm=1.0, learning_rate=1e-2,
        disable_tqdm=True, report_to="none", logging_strategy="no", fisher_batch_size=8,
        # the default multi_tensor kernels bind the plain tensors to a BitMask at attach; wrapping must move them
        fsdp="full_shard", fsdp_config=recipe_fsdp_config(), **gpu_settings,
    )
    trainer = (DeepCleanTrainer if on_gpu else CpuFsdp2Trainer)(model, args, train_dataset=random_dataset(48, (3, 16, 16), 4, seed=0), forget_dataset=random_dataset(12, (3, 16, 16), 4, seed=1))
    trainer.unlearn()
    sharded = sum(isinstance(p, DTensor) for p in trainer.model.parameters())
    unlearned = trainer.unsharded_model()  # every process takes part, as in `hf-deepclean unlearn`
    if trainer.accelerator.is_main_process:
        # What the unlearn command writes: the gathered model, then the mask beside it.
        save_classifier(unlearned, load_image_processor(None, 16), output_dir)
        trainer.save_unlearning_artifacts(output_dir)
        saved = dict(AutoModelForImageClassification.from_pretrained(output_dir).named_parameters())
        mask = ParameterMask.load(Path(output_dir) / MASK_FILE)
        frozen_changed, selected_changed = count_weight_changes(saved, original, mask)
        result = {"sharded": sharded, "num_params": len(saved), "frozen_changed": frozen_changed,
                  "selected_changed": selected_changed, "num_selected": mask.num_selected,
                  "bound": trainer.gradient_mask.num_sharded_tensors,
                  "multi_tensor": trainer.unlearning_stats["multi_tensor_masked_tensors"], "steps": trainer.state.global_step,
                  "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "checkpoints": {}}
        for checkpoint in sorted(Path(output_dir).glob("checkpoint-*")):
            files = sorted(p.name for p in checkpoint.iterdir())
            entry = {"files": files}
            if "model.safetensors" in files:
                # from_pretrained, not the raw file: transformers writes some models under their legacy key names
                weights = dict(AutoModelForImageClassification.from_pretrained(checkpoint).named_parameters())
                entry["num_tensors"] = len(weights)
                entry["unknown_names"] = sorted(set(weights) - set(original))[:5]
                entry["missing_names"] = sorted(set(original) - set(weights))[:5]
                entry["frozen_changed"], entry["selected_changed"] = count_weight_changes(weights, original, mask)
                entry["entries_differing_from_final"] = sum(
                    int((weights[n].float() != saved[n].detach().float()).sum()) for n in weights if n in saved)
            result["checkpoints"][checkpoint.name] = entry
        print(json.dumps(result))
        with open(f"{output_dir}/fsdp2_result.json", "w") as f:
            json.dump(result, f)
    trainer.accelerator.wait_for_everyone()
