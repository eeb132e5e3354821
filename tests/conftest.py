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


def pytest_runtest_logreport(report):
    """FUSED_ATTN_TEST_LOG=PATH: append each failure (node id and short traceback) and each test call that took
    over a second to PATH as it happens, so a run cut off by a time limit (bench/gpu.sh on a lent GPU) still tells
    what failed, why, and where the time went. Under xdist this runs in the controller, which receives every
    worker's reports."""
    path = os.environ.get("FUSED_ATTN_TEST_LOG")
    if not path or os.environ.get("PYTEST_XDIST_WORKER"):
        return  # xdist workers' reports reach the controller too
    slow = report.when == "call" and report.duration > 1.0
    if not (report.failed or slow):
        return
    with open(path, "a") as f:
        if slow:
            f.write(f"SLOW {report.duration:.1f} s {report.nodeid}\n")
        if report.failed:
            f.write(f"=== FAILED {report.nodeid} ({report.when})\n{report.longreprtext[-3000:]}\n\n")
