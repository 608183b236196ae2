"""``hf-deepclean benchmark``: every method x scenario x model x seed on the same footing, against one gold model or
(``--population_models N``) against N retrains; or (``--sensitivity``) the windows of DeepClean's and SSD's
hyperparameters.

The harness is the :mod:`hf_deepclean.benchmark` package; this command parses its options and runs it.
"""

from __future__ import annotations

from ..arguments import DataArguments, ModelArguments, parse_arguments
from ..benchmark.arguments import BenchmarkArguments, SensitivityArguments
from ..benchmark.harness import benchmark
from ..benchmark.population import run_population
from ..benchmark.sensitivity import run_sensitivity
from ..errors import ConfigError


def run(argv: list[str]) -> int:
    model_args, data_args, bench, sens = parse_arguments(
        (ModelArguments, DataArguments, BenchmarkArguments, SensitivityArguments),
        argv,
        prog="hf-deepclean benchmark",
        description="Compare unlearning methods across scenarios, models and seeds (resumable; results cached); "
        "--population_models N judges them against N retrains; --sensitivity sweeps DeepClean's and SSD's "
        "hyperparameters instead.",
    )
    if sens.sensitivity and bench.population_models:
        raise ConfigError("--sensitivity and --population_models are two harnesses: run them one at a time.")
    if sens.sensitivity:
        summary = run_sensitivity(model_args, data_args, bench, sens)
    elif bench.population_models:
        summary = run_population(model_args, data_args, bench)
    else:
        summary = benchmark(model_args, data_args, bench)
    print(summary["markdown"])
    return 0
