"""fused_attn's benchmark suite: `python -m bench` (see bench/__main__.py and docs/bench.md).

  cases.py     op rows (inputs and fused calls from the sample registry, bench sizes, minimal bytes), module rows,
               suites
  baselines/   the eager baselines, plain PyTorch: torch_ops.py (op rows), the module rows' torchvision / timm /
               ultralytics classes, seed_modules.py (the seed design notes' modules) and official.py
  runner.py    providers per row, the float64 check, timing over rotating inputs, GB/s and speedups
  timing.py    CPU wall clock / CUDA do_bench, input rotation, the device-to-device copy baseline
  report.py    terminal table, summary, JSON, Markdown and PNG
  env.py       device, versions, git revision, date, threads
  gpu.sh       the GPU procedure: build, info, GPU tests, benchmark fp32 and bf16
"""
