"""hf_deepclean: DeepClean machine unlearning for Hugging Face image classifiers.

Public API (imported lazily, so ``hf-deepclean --help`` stays fast)::

    from hf_deepclean import (
        ForgetSpec, split_forget_retain, load_builtin_dataset,   # data
        fisher_diagonal, select_parameters, ParameterMask,       # Fisher and selection
        DeepCleanConfig, DeepCleanTrainer,                       # the method
        evaluate_unlearning, UnlearningReport,                   # evidence
        push_unlearned_model, render_model_card,                 # Hub
    )
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "ForgetSpec": "forget",
    "split_forget_retain": "forget",
    "load_builtin_dataset": "data",
    "load_image_dataset": "data",
    "apply_label_noise": "forget",
    "with_image_transform": "data",
    "collate_fn": "data",
    "fisher_diagonal": "fisher",
    "per_sample_loop_fisher": "fisher",
    "ESTIMATORS": "fisher",
    "plot_threshold_sweep": "plots",
    "mia_loss_lr": "evaluation",
    "mia_efficacy": "evaluation",
    "SplitOutputs": "evaluation",
    "reset_sweep": "sweep",
    "choose_top_fraction": "auto",
    "METHODS": "methods",
    "run_method": "methods",
    "select_parameters": "selection",
    "ParameterMask": "selection",
    "fisher_ratio": "selection",
    "threshold_sweep": "selection",
    "DeepCleanConfig": "config",
    "DeepCleanTrainer": "trainer",
    "GradientMask": "masking",
    "GradientMaskTrainerMixin": "masking",
    "BitMask": "masking",
    "reset_selected_weights": "masking",
    "train_classifier": "training",
    "load_classifier": "training",
    "evaluate_unlearning": "evaluation",
    "UnlearningReport": "evaluation",
    "collect_outputs": "evaluation",
    "push_unlearned_model": "hub",
    "render_model_card": "modelcard",
    "write_model_card": "modelcard",
    "forget_fingerprint": "hub",
    "verify_fingerprint": "hub",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return __all__
