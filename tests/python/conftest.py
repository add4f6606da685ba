import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    from vllm_harness import make_model
    return make_model(tmp_path_factory.mktemp("tiny-llama"))
