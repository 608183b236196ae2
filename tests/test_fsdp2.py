"""DeepCleanTrainer under FSDP2 (two CPU processes, gloo): frozen weights stay bit-identical on the shards.

The worker turns on on CPU what accelerate turns on for GPUs (see its docstring); accelerate's own
fsdp2_prepare_model shards the model with fully_shard inside Trainer.train(), and DeepClean must move
its masking onto the DTensor shards. Without that move, >100k frozen entries of the ViT change
(measured by disabling the binding), so the assertions below are what fails.
"""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import _fsdp2_worker as worker  # noqa: E402
from _two_processes import run_two_cpu_processes  # noqa: E402


@pytest.mark.distributed
@pytest.mark.timeout(300)
@pytest.mark.parametrize("arch", ["vit", "resnet"])
def test_fsdp2_keeps_frozen_weights_exact_on_the_shards(tmp_path, arch):
    run_two_cpu_processes(worker.__file__, str(tmp_path), arch)
    result = json.loads((tmp_path / "fsdp2_result.json").read_text())
    assert result["steps"] > 1  # gradient accumulation 2 over 48 samples on 2 processes
    assert result["sharded"] == result["num_params"]  # every parameter became a DTensor shard
    assert result["bound"] > 0  # the mask moved to the shards of the partially selected tensors
    assert result["multi_tensor"] == 0  # shards take the per-tensor hooks, not the default multi-tensor kernels
    assert result["frozen_changed"] == 0
    assert result["selected_changed"] > 0.5 * result["num_selected"]
