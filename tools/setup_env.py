#!/usr/bin/env python3
"""Set up everything `make test` / `make ci` / `make bench` need, from nothing, idempotently.

  python3 tools/setup_env.py --venv .venv     create .venv if missing and install into it
  python3 tools/setup_env.py --venv ""        use this python3 as it is (e.g. the GPU machine: torch
                                              preinstalled, no network): install only what is missing,
                                              and keep going when an optional package cannot be installed

In a venv: torch==2.14.1 with torchvision==0.29.1 (always pinned together: a bare `torch`, or a range that admits
newer, pulls several GB; on this project's machines both come from local disk, a CUDA build of torch that runs on
the CPU), triton as torch pins it, timm and ultralytics (the real models the tests compare against), pytest with
pytest-xdist, the export and lint tools. Then the package is built in place with
`pip install -e . --no-build-isolation --no-deps` whenever csrc/, setup.py, pyproject.toml or the build flags
(FORCE_CUDA, FUSED_ATTN_NO_EXT) changed; without a GPU that is the CPU-only build unless FORCE_CUDA=1 (setup.py).
"""
import argparse
import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TORCH_PIN = {"torch": "2.14.1", "torchvision": "0.29.1"}
BUILD = {"pytest": "pytest", "xdist": "pytest-xdist", "setuptools": "setuptools>=64", "wheel": "wheel",
         "ninja": "ninja"}
# the real modules the tests compare against (nothing is downloaded at run time: YOLO_OFFLINE=1)
ECOSYSTEM = {"timm": "timm", "ultralytics": "ultralytics"}
OPTIONAL = {"numpy": "numpy", "expecttest": "expecttest", "hypothesis": "hypothesis", "matplotlib": "matplotlib",
            # export tests (tests/test_export.py): onnx, the default exporter's onnxscript, and ONNX Runtime
            "onnx": "onnx", "onnxscript": "onnxscript", "onnxruntime": "onnxruntime",
            # make lint
            "ruff": "ruff", "clang_format": "clang-format"}


def run(cmd, check=True, cwd=ROOT, env=None):
    cmd = [str(c) for c in cmd]
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=cwd, env=env, check=check).returncode


def importable(python, module):
    return subprocess.run([python, "-c", f"import {module}"], cwd="/", capture_output=True,
                          env=dict(os.environ, YOLO_OFFLINE="1")).returncode == 0


def version_of(python, module):
    """module.__version__ without a local-version suffix ('2.14.1+cu130' -> '2.14.1'), or None."""
    r = subprocess.run([python, "-c", f"import {module}; print({module}.__version__)"], cwd="/",
                       capture_output=True, text=True)
    return r.stdout.strip().split("+")[0] if r.returncode == 0 else None


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
        print(f"setup: warning: could not install optional package {specs[0]}; what needs it is skipped")


def sources_digest(root=ROOT):
    """What the extension's build depends on under root (its sources, setup.py, pyproject.toml, build flags)."""
    h = hashlib.sha256()
    files = sorted(p for p in (root / "csrc").rglob("*") if p.is_file())
    for p in files + [root / "setup.py", root / "pyproject.toml", root / "tools" / "build_flags.py"]:
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    h.update(os.environ.get("FUSED_ATTN_NO_EXT", "").encode())
    h.update(os.environ.get("FORCE_CUDA", "").encode())
    return h.hexdigest()


def build_is_current(stamp, digest, python, probe, cwd="/"):
    """The extension was built from these sources (stamp holds digest) and still loads (probe runs in python)."""
    return stamp.exists() and stamp.read_text() == digest and \
        subprocess.run([python, "-c", probe], cwd=cwd, capture_output=True).returncode == 0


def install_torch(python, in_venv):
    """The pinned torch + torchvision in a venv (both or neither: torchvision is built against one torch); on a
    system python only what is missing, whatever torch it has (the GPU machine's 2.11 with torchvision 0.26)."""
    if in_venv:
        if any(version_of(python, mod) != ver for mod, ver in TORCH_PIN.items()):
            pip_install(python, [f"{mod}=={ver}" for mod, ver in TORCH_PIN.items()], required=True)
    elif not importable(python, "torch"):
        pip_install(python, [f"{mod}=={ver}" for mod, ver in TORCH_PIN.items()], required=True)
    elif not importable(python, "torchvision"):
        pip_install(python, ["torchvision"], required=False)


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
    install_torch(python, bool(args.venv))
    missing = [spec for mod, spec in BUILD.items() if not importable(python, mod)]
    pip_install(python, missing, required=True)
    missing = [spec for mod, spec in ECOSYSTEM.items() if not importable(python, mod)]
    pip_install(python, missing, required=bool(args.venv))
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
