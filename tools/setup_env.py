#!/usr/bin/env python3
"""Set up everything `make test` / `make bench` need, from nothing, idempotently.

  python3 tools/setup_env.py --venv .venv     create .venv if missing and install into it
  python3 tools/setup_env.py --venv ""        use this python3 as it is (e.g. the GPU machine: torch
                                              preinstalled, no network): install only what is missing,
                                              and keep going when an optional tool cannot be installed

Installs torch==2.13.0 (the pinned CPU build; a bare `torch` would pull CUDA packages) only where no torch
is importable, then triton and the test tools, then builds the package in place with
`pip install -e . --no-build-isolation --no-deps` whenever csrc/, setup.py or pyproject.toml changed.
"""
import argparse
import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TORCH = "torch==2.13.0"
REQUIRED = {"torch": TORCH, "pytest": "pytest", "setuptools": "setuptools>=64", "wheel": "wheel"}
OPTIONAL = {"triton": "triton>=3.6,<3.10", "numpy": "numpy", "expecttest": "expecttest", "hypothesis": "hypothesis",
            "matplotlib": "matplotlib", "ninja": "ninja",
            # export tests (tests/test_export.py): onnx, the default exporter's onnxscript, and ONNX Runtime
            "onnx": "onnx", "onnxscript": "onnxscript", "onnxruntime": "onnxruntime"}


def run(cmd, check=True, cwd=ROOT, env=None):
    cmd = [str(c) for c in cmd]
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=cwd, env=env, check=check).returncode


def importable(python, module):
    return subprocess.run([python, "-c", f"import {module}"], cwd="/", capture_output=True).returncode == 0


def pip_install(python, specs, required):
    if not specs:
        return
    code = run([python, "-m", "pip", "install", "-q", *specs], check=False)
    if code and required:
        sys.exit(f"setup: could not install required packages {specs}")
    if code and len(specs) > 1:  # one optional package without a wheel here must not block the others
        for spec in specs:
            pip_install(python, [spec], required=False)
    elif code:
        print(f"setup: warning: could not install optional package {specs[0]}; tests that need it are skipped")


def sources_digest(root=ROOT):
    """What the extension's build depends on under root (its sources, setup.py, pyproject.toml, build flags)."""
    h = hashlib.sha256()
    files = sorted(p for p in (root / "csrc").rglob("*") if p.is_file())
    for p in files + [root / "setup.py", root / "pyproject.toml"]:
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    h.update(os.environ.get("FUSED_ATTN_NO_EXT", "").encode())
    h.update(os.environ.get("FORCE_CUDA", "").encode())
    return h.hexdigest()


def build_is_current(stamp, digest, python, probe, cwd="/"):
    """The extension was built from these sources (stamp holds digest) and still loads (probe runs in python)."""
    return stamp.exists() and stamp.read_text() == digest and \
        subprocess.run([python, "-c", probe], cwd=cwd, capture_output=True).returncode == 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--venv", default=".venv", help='virtual environment folder; "" = use this python3')
    args = ap.parse_args()
    python = sys.executable
    if args.venv:
        venv = (ROOT / args.venv).resolve()
        python = str(venv / "bin" / "python")
        if not Path(python).exists():
            run([sys.executable, "-m", "venv", str(venv)])
    missing = [spec for mod, spec in REQUIRED.items() if not importable(python, mod)]
    pip_install(python, missing, required=True)
    missing = [spec for mod, spec in OPTIONAL.items() if not importable(python, mod)]
    pip_install(python, missing, required=False)

    stamp = ROOT / "build" / f"ext-stamp-{hashlib.sha256(python.encode()).hexdigest()[:12]}"
    digest = sources_digest()
    probe = "import fused_attn, fused_attn._ext as e; assert e.available() or e.load_error().startswith('disabled')"
    if build_is_current(stamp, digest, python, probe):
        print("setup: fused_attn is built and up to date")
        return
    run([python, "-m", "pip", "install", "-q", "-e", ".", "--no-build-isolation", "--no-deps"])
    stamp.parent.mkdir(exist_ok=True)
    stamp.write_text(digest)


if __name__ == "__main__":
    main()
