import os

# Tests never reach the Hub; the Hub tests point HF_ENDPOINT at their own local server.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402
import torch  # noqa: E402

# Tiny models run fastest on one thread, and the suite stays stable on a shared 2-core machine.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits():
    from hf_deepclean.data import load_builtin_dataset

    return load_builtin_dataset("digits")


@pytest.fixture(scope="session")
def image_processor():
    from hf_deepclean.images import load_image_processor

    return load_image_processor(None, image_size=16)
