"""`python -m bench`: fused_attn's benchmark suite (docs/bench.md).

Every op and module row is timed for each provider: eager PyTorch (the row's baseline, plain PyTorch as users
write it: the op in torch ops, or the module fused_attn's replaces, from torchvision / timm / ultralytics, the
seed documents or the official code; bench/baselines), torch.compile of it, and fused_attn on each backend that
serves it here; figures per provider: median time (20/80
percentiles), speedup vs eager and vs torch.compile, effective GB/s from the minimal bytes and its fraction of
a device-to-device copy, and the max error against a float64 reference. Prints the table as it goes; writes
JSON, Markdown and (with matplotlib) PNG files to --out (default $OUT, else bench/out).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import torch

import fused_attn

from . import baselines, cases, env, models, report, runner
from .timing import Timer

DTYPES = ("float32", "bfloat16", "float16", "float64")


def parse_shape(text: str) -> tuple:
    try:
        dims = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        dims = ()
    if len(dims) != 4 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"expected BxCxHxW (e.g. 8x64x56x56), got {text!r}")
    return dims


def _split(values) -> list:
    return [v.strip() for item in values for v in item.split(",") if v.strip()] if values else []


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="fewer sizes and timed calls")
    size.add_argument("--full", action="store_true", help="size sweeps (more batch sizes and module sizes)")
    ap.add_argument("--op", action="append", metavar="NAME",
                    help="op rows to run (name, name without its variant, or op; repeatable); with --module only, "
                         "no op rows")
    ap.add_argument("--module", action="append", metavar="NAME",
                    help="module rows to run (e.g. SEBlock, vgg16_se; repeatable); with --op only, no module rows")
    ap.add_argument("--model", action="append", metavar="NAME",
                    help="real-model rows instead of op and module rows (bench/models.py): a torchvision or timm "
                         f"name, tv:NAME / timm:NAME, or 'all' ({', '.join(models.MODELS)}); repeatable")
    ap.add_argument("--batch", action="append", type=int, metavar="N",
                    help="--model: inference batch sizes (default 1 and 16; repeatable)")
    ap.add_argument("--train-batch", type=int, default=8, metavar="N", help="--model: training batch (default 8)")
    ap.add_argument("--image-size", type=int, default=224, metavar="PX", help="--model: input size (default 224)")
    ap.add_argument("--dtype", action="append", metavar="DTYPE",
                    help=f"dtypes, repeatable or comma-separated ({', '.join(DTYPES)}; default float32)")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available, else cpu)")
    ap.add_argument("--backends", action="append", metavar="LIST",
                    help=f"providers to run, comma-separated ({', '.join(runner.PROVIDERS)}; default all here; "
                         "triton on CPU, i.e. its interpreter, only when named)")
    ap.add_argument("--mode", action="append", choices=cases.ALL_MODES,
                    help="fwd, fwd+bwd (default both), or fwd+bwd(sum): the backward of out.sum(), a stride-0 "
                         "gradient")
    ap.add_argument("--shape", action="append", type=parse_shape, metavar="BxCxHxW",
                    help="sizes for op and module rows instead of the suite's (repeatable)")
    ap.add_argument("--repeat", type=int, default=None,
                    help="CPU: timed calls per measurement (default 7, quick 5); CUDA: do_bench's repetition "
                         "window becomes 15*N ms (default 100 ms), and at least N calls (default 10)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    ap.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                    help="skip the rows that would start after this many seconds (reported as skipped)")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default $OUT, else bench/out)")
    ap.add_argument("--tag", default=None, metavar="NAME",
                    help="name for the result files in place of the suite's (e.g. goals when --shape picks sizes)")
    ap.add_argument("--save", type=Path, default=None, metavar="DIR",
                    help="also copy the JSON, Markdown and PNG into DIR (e.g. bench/results/)")
    args = ap.parse_args(argv)
    args.dtypes = _split(args.dtype) or ["float32"]
    bad = [d for d in args.dtypes if d not in DTYPES]
    if bad:
        ap.error(f"unknown dtype {', '.join(bad)}; choose from {', '.join(DTYPES)}")
    args.backends = _split(args.backends) or None
    bad = [b for b in args.backends or () if b not in runner.PROVIDERS]
    if bad:
        ap.error(f"unknown provider {', '.join(bad)}; choose from {', '.join(runner.PROVIDERS)}")
    return args


def plan(args, device: torch.device) -> list:
    """[(kind, case, dims, dtype, mode)] in run order: per dtype, every case at its first size (the vgg16_se
    step included), then every case at its second size, and so on; so a --time-limit cuts sweeps, not cases.
    The report lists rows grouped by case (see `report_order`)."""
    suite = cases.suite_for(suite_name(args), device.type)
    op_shapes, module_shapes = (args.shape, args.shape) if args.shape else (suite.ops, suite.modules)
    only_modules = args.module is not None and args.op is None
    only_ops = args.op is not None and args.module is None
    modes = args.mode or list(cases.MODES)
    chosen = [("op", c, op_shapes, modes)
              for c in ([] if only_modules else cases.select(cases.OP_CASES, args.op, "op"))]
    for c in [] if only_ops else cases.select(cases.MODULE_CASES, args.module, "module"):
        vgg_modes = [m for m in modes if m in suite.vgg_modes or args.mode]
        chosen.append(("module", c, [suite.vgg], vgg_modes) if c.model else ("module", c, module_shapes, modes))
    rounds = max((len(shapes) for _, _, shapes, _ in chosen), default=0)
    return [(kind, case, shapes[i], getattr(torch, dtype), mode)
            for dtype in args.dtypes for i in range(rounds) for kind, case, shapes, case_modes in chosen
            if i < len(shapes) for mode in case_modes]


def suite_name(args) -> str:
    return "quick" if args.quick else "full" if args.full else "default"


def report_order(rows: list, rows_plan: list) -> list:
    """Rows grouped by dtype, then case (in the order cases are defined), then size, then mode."""
    keys = []
    case_order = {id(c): n for n, c in enumerate(cases.OP_CASES + cases.MODULE_CASES)}
    for n, (_kind, case, dims, dtype, mode) in enumerate(rows_plan[:len(rows)]):
        first_size = next(i for i, p in enumerate(rows_plan) if p[1] is case and p[2] == dims)
        keys.append((str(dtype), case_order[id(case)], first_size, cases.ALL_MODES.index(mode), n))
    return [rows[k[-1]] for k in sorted(keys)]


def make_timer(args, device: torch.device) -> Timer:
    if device.type == "cuda":
        warmup_ms, rep_ms = (10, 30) if args.quick else (25, 100)
        if args.repeat:
            rep_ms = 15 * args.repeat
        return Timer(device, repeat=args.repeat or 10, warmup_ms=warmup_ms, rep_ms=rep_ms)
    repeat = args.repeat or (5 if args.quick else 7)
    # the checked first call of every provider already ran it once: one more warm-up call is enough
    return Timer(device, repeat=repeat, warmup=1, min_time_s=0.0 if args.repeat == 1 else 0.1)


class RowProgress:
    """Streams one row to the terminal: its header once it is set up, then a line per provider."""

    def __init__(self, out: report.Progress, index: int, total: int, started: float):
        self.out, self.index, self.total, self.started = out, index, total, started

    def start(self, row: dict) -> None:
        self.out.print(report.row_header(row, self.index, self.total, time.perf_counter() - self.started))

    def provider(self, result: dict) -> None:
        self.out.print(report.provider_line(result))


def output_paths(args, meta: dict) -> dict:
    out = args.out or Path(os.environ.get("OUT") or env.ROOT / "bench" / "out")
    out.mkdir(parents=True, exist_ok=True)
    stem = f"bench_{env.slug(meta['device_name'])}_{'-'.join(meta['dtypes'])}_{env.slug(args.tag or meta['suite'])}"
    return {ext: out / f"{stem}.{ext}" for ext in ("json", "md", "png")}


def shapes_of(rows_plan: list) -> dict:
    """The sizes a run covers, per kind of row."""
    shapes: dict = {"op": [], "module": []}
    for kind, case, dims, _, _ in rows_plan:
        key = "vgg16_se" if getattr(case, "model", False) else kind
        if list(dims) not in shapes.setdefault(key, []):
            shapes[key].append(list(dims))
    return shapes


def baseline_meta(rows_plan: list) -> dict:
    """What each planned case's eager provider runs: {case: {kind, name, source, mapping (weights mapped)}};
    a module case with no candidate available here has name None and `missing` (why)."""
    out: dict = {}
    for kind, case, _, _, _ in rows_plan:
        if case.name in out:
            continue
        if kind == "op":
            out[case.name] = {"kind": kind, "name": case.baseline, "source": runner.OP_BASELINES}
            continue
        try:
            b = case.baseline()
            out[case.name] = {"kind": kind, "name": b.name, "source": b.version(),
                              **({"mapping": b.mapping} if b.mapping else {})}
        except baselines.Missing as exc:
            out[case.name] = {"kind": kind, "name": None, "missing": str(exc)}
    return out


def run_rows(rows_plan: list, cfg: runner.Config, out: report.Progress, json_path: Path, meta: dict) -> list:
    """Run every planned row (or mark it skipped past the time limit), rewriting the JSON after each."""
    rows: list = []
    for i, (kind, case, dims, dtype, mode) in enumerate(rows_plan, 1):
        start = time.perf_counter()
        if cfg.over_time():
            row = runner.new_row(kind, case, dims, dtype, mode)
            row.update(status="skipped", reason=f"time limit of {cfg.time_limit_s:.0f} s reached")
        else:
            row_fn = runner.op_row if kind == "op" else runner.module_row
            row = row_fn(case, dims, dtype, mode, cfg, RowProgress(out, i, len(rows_plan), cfg.started))
            if row["status"] != "ok":
                out.print(report.row_header(row, i, len(rows_plan), start - cfg.started)
                          + f"  {row['status']}: {row['reason']}")
        row["wall_s"] = time.perf_counter() - start
        rows.append(row)
        meta["wall_s"] = time.perf_counter() - cfg.started
        report.write_json(json_path, meta, rows)
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model:
        return run_models(args, device)
    rows_plan = plan(args, device)
    timer = make_timer(args, device)
    cfg = runner.Config(device, timer, args.backends, args.time_limit)
    meta = env.metadata(device)
    meta.update(suite=suite_name(args), tag=args.tag, dtypes=args.dtypes, shapes=shapes_of(rows_plan),
                providers_legend=runner.LEGEND, timer=timer.describe(), baselines=baseline_meta(rows_plan),
                seed_modules="bench/baselines/seed_modules.py",
                seed_modules_sha256=env.file_digest(baselines.HERE / "seed_modules.py"))
    paths = output_paths(args, meta)
    out = report.Progress()
    out.print(f"fused_attn bench: {len(rows_plan)} rows on {meta['device_name']} ({device}), torch {meta['torch']}, "
              f"triton {meta['triton']}, git {meta['git']['sha'][:12]}; backends here: "
              f"{', '.join(meta['available_backends'])}")
    out.print(f"timer: {meta['timer']}")
    out.print(report.baselines_line(meta["baselines"]))
    out.print(f"providers: {runner.LEGEND}")
    out.print(f"writing {paths['json']} (+ .md, .png)\n")
    out.print(report.COLUMNS)

    rows = report_order(run_rows(rows_plan, cfg, out, paths["json"], meta), rows_plan)
    skipped = sum(r["status"] == "skipped" for r in rows)
    if skipped:
        out.print(f"\n{skipped} rows skipped: time limit of {args.time_limit:.0f} s reached")
    meta["wall_s"] = time.perf_counter() - cfg.started
    out.print("\n" + report.summary(rows))
    report.write_json(paths["json"], meta, rows)
    paths["md"].write_text(report.markdown(meta, rows))
    why_not = report.write_png(paths["png"], meta, rows)
    if why_not:
        paths["png"].unlink(missing_ok=True)  # not a stale plot of an earlier run
    written = [paths["json"], paths["md"]] + ([] if why_not else [paths["png"]])
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        written += [Path(shutil.copy2(p, args.save / p.name)) for p in list(written)]
    out.print(f"\ndone in {meta['wall_s']:.0f} s; wrote " + ", ".join(str(p) for p in written))
    if why_not:
        out.print(why_not)
    return 0


def run_models(args, device: torch.device) -> int:
    """`--model`: the real-model rows (bench/models.py), written as bench_models_<device>_<tag>.{json,md}."""
    names = [n for name in _split(args.model) for n in (models.MODELS if name == "all" else [name])]
    repeat = args.repeat or (3 if args.quick else 5)
    meta = env.metadata(device)
    meta.update(suite="models", tag=args.tag, models=names, batches=args.batch or [1, 16],
                train_batch=args.train_batch, image_size=args.image_size, repeat=repeat,
                compile_policy=fused_attn.compile_policy())
    out = args.out or Path(os.environ.get("OUT") or env.ROOT / "bench" / "out")
    out.mkdir(parents=True, exist_ok=True)
    stem = f"bench_models_{env.slug(meta['device_name'])}_{env.slug(args.tag or 'float32')}"
    rows, started = [], time.perf_counter()
    print(f"fused_attn bench --model: {', '.join(names)} on {meta['device_name']}, torch {meta['torch']}")
    for name in names:
        rows += models.model_rows(name, device, tuple(args.batch or (1, 16)), args.train_batch, args.image_size,
                                  repeat)
        models.write_json(out / f"{stem}.json", meta, rows)
    meta["wall_s"] = time.perf_counter() - started
    models.write_json(out / f"{stem}.json", meta, rows)
    (out / f"{stem}.md").write_text(models.markdown(meta, rows))
    written = [out / f"{stem}.json", out / f"{stem}.md"]
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        written += [Path(shutil.copy2(p, args.save / p.name)) for p in list(written)]
    print(f"done in {meta['wall_s']:.0f} s; wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
