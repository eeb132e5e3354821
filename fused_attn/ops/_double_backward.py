"""Double backward of every op: each backward custom op gets an autograd formula of its own.

An op F(inputs) -> outputs has a backward op B(grads, inputs, saved, ...) -> (the gradient of each tensor input
of F, in F's order), computed by the fast kernels of the chosen backend. When B itself is differentiated
(`torch.autograd.grad(..., create_graph=True)` then backward again: gradient penalties such as R1 / WGAN-GP,
meta-learning, Hessian-vector products), its derivative is the second-order vjp of F

  d<gg, B(g, inputs)> / d(g, inputs) = d/d(g, inputs) <gg, d<g, F(inputs)> / d inputs>

computed here from F's reference math (the reference backend's passes are differentiable PyTorch ops): F is
re-run on the reference backend inside torch.func.vjp, and that vjp differentiated along gg by torch.func.vjp
again. The first backward keeps the fast kernels; only the second order runs the reference. Saved auxiliaries
(pooled descriptors, argmax, statistics) are recomputed from the inputs, so the derivative includes the paths
through them (F marks them non-differentiable, so autograd alone would not see those paths). torch.func keeps
this computation apart from the graph being differentiated and composes with it: when the second backward
itself records a graph (create_graph=True again), the result is differentiable in the saved tensors'
histories, so third and higher orders are exact too.

`register(backward_op, forward_op)` reads both schemas: B must take F's arguments by the same names, after its
leading gradient arguments (one per differentiable output of F, F's first outputs), and return one gradient per
tensor argument of F (less the `absent` ones).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def _is_tensor_arg(arg) -> bool:
    return "Tensor" in str(arg.type)


def register(backward_op, forward_op, absent: tuple = ()) -> None:
    """Give `backward_op` an autograd formula: the second-order vjp of `forward_op` on the reference backend.
    `absent`: optional tensor arguments of F that B does not take (F runs without them): those whose gradient
    is linear in the output's, e.g. apply_gates' residual (its gradient is grad_out itself, outside B)."""
    b_names = [a.name for a in backward_op._opoverload._schema.arguments]
    f_args = forward_op._opoverload._schema.arguments
    f_names = [a.name for a in f_args]
    missing = [n for n in f_names if n not in b_names and n not in absent]
    if missing:
        raise TypeError(f"{backward_op._qualname} lacks {forward_op._qualname}'s arguments {missing}")
    n_grads = b_names.index(f_names[0])  # B's leading arguments: the gradients of F's first outputs
    f_pos = [b_names.index(n) if n not in absent else None for n in f_names]
    f_tensors = [i for i, a in enumerate(f_args)  # B's outputs: one per tensor input of F it takes
                 if _is_tensor_arg(a) and a.name not in absent]
    n_outputs = len(backward_op._opoverload._schema.returns)
    if n_outputs != len(f_tensors):
        raise TypeError(f"{backward_op._qualname} returns {n_outputs} gradients for {len(f_tensors)} tensor "
                        f"inputs of {forward_op._qualname}")
    tensor_pos = [i for i, a in enumerate(backward_op._opoverload._schema.arguments) if _is_tensor_arg(a)]
    backend_at = f_names.index("backend")
    forward: Callable = forward_op.eager_fn  # the op's Python body: with backend "reference", plain torch ops

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*[inputs[i] for i in tensor_pos])
        ctx.plain = [None if i in tensor_pos else a for i, a in enumerate(inputs)]

    def backward(ctx, *grad_grads):
        args = list(ctx.plain)
        for i, t in zip(tensor_pos, ctx.saved_tensors):
            args[i] = t
        f_call = [args[p] if p is not None else None for p in f_pos]
        f_call[backend_at] = "reference"
        diff = [i for i in f_tensors if f_call[i] is not None and f_call[i].is_floating_point()]
        pairs = [(k, gg) for k, (i, gg) in enumerate(zip(f_tensors, grad_grads)) if gg is not None and i in diff]
        result: list = [None] * len(args)
        if not pairs:
            return tuple(result)

        def outputs(*ins):  # F's first outputs, on the reference, as a function of its floating tensor inputs
            call = list(f_call)
            for i, t in zip(diff, ins):
                call[i] = t
            outs = forward(*call)
            return tuple([outs] if isinstance(outs, Tensor) else outs)[:n_grads]

        def first_backward(grads, inputs):  # B's math on the reference: the vjp of those outputs
            _, vjp = torch.func.vjp(outputs, *inputs)
            firsts = dict(zip(diff, vjp(tuple(grads))))
            return tuple(firsts[f_tensors[k]] for k, _ in pairs)

        # torch.func composes with the surrounding autograd: the result is differentiable in the saved tensors'
        # own histories when this backward records a graph (create_graph=True), so higher orders are exact
        grads = tuple(args[:n_grads])
        inputs = tuple(f_call[i] for i in diff)
        _, vjp = torch.func.vjp(first_backward, grads, inputs)
        d_grads, d_inputs = vjp(tuple(gg for _, gg in pairs))
        for k in range(n_grads):
            result[k] = d_grads[k]
        for i, d in zip(diff, d_inputs):
            result[f_pos[i]] = d
        return tuple(r if needed else None for r, needed in zip(result, ctx.needs_input_grad))

    backward_op.register_autograd(backward, setup_context=setup_context)
