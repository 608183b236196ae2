"""Test subprocesses: the environment they run in, and a worker script on two CPU processes of one gloo group."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def subprocess_env(**extra: str) -> dict:
    """This environment, offline, with the repository importable (the tests run from a checkout), plus ``extra``."""
    return {**os.environ, "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **extra}


def run_two_cpu_processes(script: str | os.PathLike, *args: str, timeout: int = 280) -> subprocess.CompletedProcess:
    # `accelerate launch --cpu --num_processes 2` starts ONE process; --multi_gpu with ACCELERATE_USE_CPU=1 starts two.
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0", str(script), *args]
    env = subprocess_env(ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc
