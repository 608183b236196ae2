#!/usr/bin/env bash
# The GPU checks in one run, for a machine with a CUDA GPU (CI has none): the GPU tests (bf16 masking,
# FSDP2 on one GPU with bf16 and Trainer checkpoints), then the Fisher and trainer benchmarks on ViT-B/16
# (built from its config, CIFAR-sized random data upsampled to 224). Run from the repository root:
#
#     bash benchmarks/gpu_checks.sh [LOG_DIR]        # PYTHON=python3 by default
#
# Each step has its own time limit, so one that hangs cannot take the others' time; the logs go to LOG_DIR.
set -uo pipefail
log=${1:-gpu_checks}
py=${PYTHON:-python3}
mkdir -p "$log"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
# The benchmark scripts import hf_deepclean from this checkout: a GPU image need not have it installed.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

step() {  # step NAME SECONDS COMMAND...: run COMMAND with a limit, output to the terminal and LOG_DIR/NAME.txt
    local name=$1 limit=$2; shift 2
    echo "=== $name ($(date +%T))"
    timeout "$limit" "$@" 2>&1 | tee "$log/$name.txt"
    echo "=== $name: exit ${PIPESTATUS[0]}"
}

# Each package's version on its own: a GPU image may lack one (datasets, seen on an H200) and still run the steps below.
step environment 60 bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; $py -c \
'import importlib
for name in (\"torch\", \"transformers\", \"accelerate\", \"datasets\"):
    try: print(name, importlib.import_module(name).__version__)
    except ImportError as exc: print(name, \"not importable:\", exc)'"
step tests 260 "$py" -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider -rA -s
# Each trainer run times the plain step and the masked step with both masking kernels (per_tensor, multi_tensor).
step trainer_bf16 150 "$py" benchmarks/trainer_overhead.py --model vit-b16 --device cuda --steps 30 --repeats 3 --bf16
step trainer_fp32 150 "$py" benchmarks/trainer_overhead.py --model vit-b16 --device cuda --steps 30 --repeats 3
step fisher 120 "$py" benchmarks/fisher_speed.py --model vit-b16 --device cuda --num_samples 1024 --batch_size 32 \
    --chunk_size 32 --loop_samples 64 --repeats ${FISHER_REPEATS:-2}
