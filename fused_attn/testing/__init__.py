"""Test support shipped with the package: the sample registry (registry.py) and its vocabulary (cases.py).

Used by the test suite, `python -m fused_attn.selfcheck`, tools/ and bench/; importing it registers the ops.
"""
