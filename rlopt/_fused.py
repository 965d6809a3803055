"""Optional fused CPU kernels (numba) for the controller's per-step work.

Right after a training step a controller's few small passes cost far more than their arithmetic:
every call starts from cold caches (the step evicted them). Timed inside a CNN training loop (7 ms
steps, one thread), the statistics' fifteen torch calls took about 0.18 ms and the Q-network's three
tiny ``addmm`` about 0.09 ms; the two kernels here take about 0.05 ms and 0.02 ms.

This module imports numba, an optional dependency (``pip install rlopt[fast]``); import it only
through :func:`rlopt.control.fused_kernels`, which returns ``None`` where numba is missing or
``NUMBA_DISABLE_JIT`` is set, and callers then run their torch code. That code computes the same
quantities (sums in another order, so equal up to float rounding). Compiled code is cached on disk
(numba's ``cache=True``): only the first use on a machine compiles.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

# float32 unit roundoff, and the absolute error a float32 product can lose to underflow
_UNIT = 2.0**-24
_UNDERFLOW = 2.0**-126
_FLOAT32_MAX = 3.0e38


@intrinsic
def _pointer_like(typingctx, address, like):
    """``address`` (an int64) as a pointer to elements of ``like``'s dtype."""
    pointer = types.CPointer(like.dtype)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(pointer))

    return pointer(address, like), codegen


# The tensors arrive as start addresses and sizes, not as a tuple of arrays: a tuple would compile
# once per parameter count and cost its length in dispatch (300 tensors: 16 s, then 190 µs a call).
# Reassociation lets LLVM vectorize the sums; the order it picks depends only on the sizes and the
# CPU, so a machine gets the same numbers every run.
@numba.njit(cache=True, nogil=True, fastmath={"reassoc"}, boundscheck=False)
def parameter_statistics(grad_addresses, grad_sizes, param_addresses, param_sizes, previous, has_previous, out):
    """``out = (Σ|g|, Σg, Σ sign Δθ, Σ|sign Δθ|, Σ|Δθ|, Σ|θ|)``; writes θ into ``previous``.

    Gradients and parameters are dense tensors of ``previous``'s dtype given by start address and
    element count (int64 arrays); read in memory order, the parameters concatenated match
    ``previous``. The caller keeps them alive. Δθ = θ − previous in that dtype, as torch subtracts;
    sums accumulate in float64; a NaN Δθ counts as no change, as ``torch.sign(nan)`` is 0. Without
    ``has_previous`` the Δθ sums are 0.
    """
    grad_abs = 0.0
    grad_sum = 0.0
    for k in range(grad_addresses.size):
        g = numba.carray(_pointer_like(grad_addresses[k], previous), grad_sizes[k])  # type: ignore[call-arg]
        for i in range(g.size):
            x = np.float64(g[i])
            grad_sum += x
            grad_abs += abs(x)
    sign_sum = 0.0
    sign_abs = 0.0
    delta_abs = 0.0
    param_abs = 0.0
    offset = 0
    for k in range(param_addresses.size):
        n = param_sizes[k]
        p = numba.carray(_pointer_like(param_addresses[k], previous), n)  # type: ignore[call-arg]
        q = previous[offset : offset + n]
        for i in range(n):
            x = p[i]
            d = x - q[i]
            q[i] = x
            param_abs += abs(np.float64(x))
            delta_abs += abs(np.float64(d))
            sign_sum += np.float64(d > 0) - np.float64(d < 0)
            sign_abs += np.float64(d > 0) + np.float64(d < 0)
        offset += n
    if not has_previous:
        sign_sum = sign_abs = delta_abs = 0.0
    out[0] = grad_abs
    out[1] = grad_sum
    out[2] = sign_sum
    out[3] = sign_abs
    out[4] = delta_abs
    out[5] = param_abs


@numba.njit(cache=True, nogil=True, boundscheck=False)
def greedy_action(weights, biases, tanh, observation, values, errors):
    """The action float32 ``Linear → act → … → Linear`` layers rank highest, or −1 if unsure.

    Computes the Q-values in float64 together with a bound on how far any float32 evaluation
    (any summation order, with or without FMA) can be from them: per layer
    ``e_out = γ_{K+1}·(|W|·|h| + |b|) + (1+γ_{K+1})·|W|·e_in`` (activations are 1-Lipschitz;
    tanh adds 4 ulps), with γ doubled as a margin. If the best Q-value leads every other by
    more than both their bounds, float32 ranks it first too; otherwise (a near tie, NaN,
    overflow) it returns −1 and the caller evaluates the network in torch.
    ``values``/``errors`` are ``(2, width)`` float64 scratch arrays.
    """
    h = values[0]
    e = errors[0]
    for k in range(observation.size):
        h[k] = np.float64(observation[k])
        e[k] = 0.0
    src = 0
    n_layers = len(weights)
    for layer in range(n_layers):
        w = weights[layer]
        b = biases[layer]
        n_out, n_in = w.shape
        gamma = 2.0 * (n_in + 1) * _UNIT / (1.0 - (n_in + 1) * _UNIT)
        h_in = values[src]
        e_in = errors[src]
        h_out = values[1 - src]
        e_out = errors[1 - src]
        for o in range(n_out):
            s = float(b[o])
            magnitude = abs(s)
            carried = 0.0
            for k in range(n_in):
                wk = float(w[o, k])
                s += wk * h_in[k]
                magnitude += abs(wk) * abs(h_in[k])
                carried += abs(wk) * e_in[k]
            if not magnitude < _FLOAT32_MAX:  # float32 may overflow (or NaN): let torch decide
                return -1
            bound = gamma * magnitude + (1.0 + gamma) * carried + (n_in + 1) * _UNDERFLOW
            if layer < n_layers - 1:
                if tanh:
                    s = np.tanh(s)
                    bound += 4.0 * _UNIT
                elif s < 0.0:
                    s = 0.0
            h_out[o] = s
            e_out[o] = bound
        src = 1 - src
    q = values[src]
    e = errors[src]
    n = weights[n_layers - 1].shape[0]
    best = 0
    for i in range(1, n):
        if q[i] > q[best]:
            best = i
    for i in range(n):
        if i != best and not q[best] - q[i] > e[best] + e[i]:
            return -1
    return best

