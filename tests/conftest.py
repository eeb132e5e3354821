import os

import torch

# ultralytics never reaches the network (settings sync, asset downloads); its models are built with random weights
os.environ["YOLO_OFFLINE"] = "1"

# Triton kernels run on CPU tensors through its interpreter where there is no GPU (CI). The flag is read
# when kernels are defined, so it is set before any test imports fused_attn.backends.triton.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
