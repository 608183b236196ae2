"""DeepClean (Shi et al. 2024, arXiv 2311.10448) through :class:`~hf_deepclean.trainer.DeepCleanTrainer`.

Fisher on D_f and D_r -> select the top weights by ``I_Df / I_Dr`` -> reset them -> fine-tune only
them on D_r. The registry holds the paper's variant (``reset="zero"``, empirical Fisher) and the
ablations ``reset="init"``, ``reset="none"`` and the cheap ``batch`` Fisher estimator.
"""

from __future__ import annotations

from ..config import DeepCleanConfig
from ..trainer import DeepCleanTrainer
from .base import MethodResult, model_inputs, quiet, require_splits, with_seed

# Measured on the tiny digits ViT forgetting class 3: Acc_Df 0.000 / test 0.864, as the gold model.
# The fast preset's fraction: on the digits ResNet (class 3) 2-10 % passed, on the ViT 2 % under-forgot.
FAST_TOP_FRACTION = 0.05
DIGITS_DEFAULTS = {"top_fraction": 0.15, "num_train_epochs": 2.0, "learning_rate": 3e-3, "reset": "zero"}


def default_config(**overrides) -> DeepCleanConfig:
    values = dict(DIGITS_DEFAULTS, disable_tqdm=True, logging_strategy="no")
    values.update(overrides)
    return DeepCleanConfig(**values)


def run(model, splits, processor=None, config: DeepCleanConfig | None = None, *, seed: int = 0) -> MethodResult:
    """``splits``: ``forget`` and ``retain``, and ``validation`` (held-out images) where ``top_fraction="auto"`` or
    early stopping needs one."""
    require_splits(splits, "forget", "retain")
    args = with_seed(config or default_config(), seed)
    trainer = DeepCleanTrainer(
        model,
        args,
        train_dataset=model_inputs(splits["retain"], processor),
        forget_dataset=model_inputs(splits["forget"], processor),
        eval_dataset=model_inputs(splits["validation"], processor) if "validation" in splits else None,
        processing_class=processor,
    )
    quiet(trainer).unlearn()
    stats = trainer.unlearning_stats
    return MethodResult(
        trainer.model,
        stats["total_time_s"],
        {
            "time": {"fisher": stats["fisher_time_s"], "train": stats["train_time_s"], "total": stats["total_time_s"]},
            "selection": {k: stats[k] for k in ("threshold", "top_fraction", "selected_fraction", "num_selected")},
        },
    )
