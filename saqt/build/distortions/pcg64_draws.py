"""numpy ``Generator`` draws on PCG64 (``random`` and ``standard_normal``), bit for bit, inside compiled kernels.

numpy's samplers call the bit generator through a function pointer per draw, and its normal sampler
branches on each draw's sign; the same algorithms inlined here (PCG64 XSL-RR steps, numpy's 256-layer
ziggurat with its tables, as numba ships them) draw normals about 4x faster, and let a kernel use each
draw where it is made instead of filling an array first. The generator's state is read before and
written back after, so its stream continues exactly as if numpy had drawn the values.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic
from numba.np.random._constants import fi_double, ki_double, wi_double, ziggurat_nor_inv_r, ziggurat_nor_r

_MUL_HI = np.uint64(2549297995355413924)  # PCG64's 128-bit LCG multiplier, high and low words
_MUL_LO = np.uint64(4865540595714422341)
_WORD = (1 << 64) - 1
_U = np.uint64


@intrinsic
def _mul_high(typingctx, a, b):
    """The high 64 bits of the 128-bit product of two uint64."""

    def codegen(context, builder, signature, args):
        i128 = ir.IntType(128)
        product = builder.mul(builder.zext(args[0], i128), builder.zext(args[1], i128))
        return builder.trunc(builder.lshr(product, ir.Constant(i128, 64)), ir.IntType(64))

    return types.uint64(types.uint64, types.uint64), codegen


@numba.njit(cache=True, nogil=True, inline="always")
def _next_uint64(state: tuple) -> tuple:
    """One PCG64 step on (state high, state low, increment high, increment low); the new state and its output."""
    hi, lo, inc_hi, inc_lo = state
    prod_lo = lo * _MUL_LO
    new_lo = prod_lo + inc_lo
    new_hi = hi * _MUL_LO + lo * _MUL_HI + _mul_high(lo, _MUL_LO) + inc_hi + _U(new_lo < prod_lo)
    mixed = new_hi ^ new_lo
    rot = new_hi >> _U(58)
    return (new_hi, new_lo, inc_hi, inc_lo), (mixed >> rot) | (mixed << ((_U(64) - rot) & _U(63)))


@numba.njit(cache=True, nogil=True, inline="always")
def next_double(state: tuple) -> tuple:
    """numpy's ``next_double``: the top 53 bits of a step as a float in [0, 1)."""
    state, bits = _next_uint64(state)
    return state, (bits >> _U(11)) * (1.0 / 9007199254740992.0)


@numba.njit(cache=True, nogil=True, inline="always")
def _normal_tail(state: tuple, rabs: np.uint64) -> tuple:
    """The ziggurat's base-layer tail (Marsaglia's method), drawn when the first uniform falls outside layer 0."""
    while True:
        state, u = next_double(state)
        xx = -ziggurat_nor_inv_r * np.log1p(-u)
        state, u = next_double(state)
        yy = -np.log1p(-u)
        if yy + yy > xx * xx:
            return state, -(ziggurat_nor_r + xx) if (rabs >> _U(8)) & _U(1) else ziggurat_nor_r + xx


@numba.njit(cache=True, nogil=True, inline="always")
def next_normal(state: tuple) -> tuple:
    """numpy's ``random_standard_normal``: the new state and one N(0, 1) draw."""
    while True:
        state, r = _next_uint64(state)
        idx = r & _U(0xFF)
        r >>= _U(8)
        rabs = (r >> _U(1)) & _U(0x000FFFFFFFFFFFFF)
        x = rabs * wi_double[idx] * (1.0 - 2.0 * (r & _U(1)))  # exact negation, without a branch per draw
        if rabs < ki_double[idx]:
            return state, x
        if idx == 0:
            return _normal_tail(state, rabs)
        state, u = next_double(state)
        if (fi_double[idx - 1] - fi_double[idx]) * u + fi_double[idx] < np.exp(-0.5 * x * x):
            return state, x


@numba.njit(cache=True, nogil=True)
def _fill(out: np.ndarray, state: tuple) -> tuple:
    for i in range(out.size):
        state, out[i] = next_normal(state)
    return state


def read_state(rng: np.random.Generator) -> tuple:
    """The PCG64 state of ``rng`` as four uint64 words for the compiled samplers (``default_rng`` makes PCG64)."""
    if type(rng.bit_generator) is not np.random.PCG64:
        raise TypeError(f"the compiled samplers follow PCG64's stream, not {type(rng.bit_generator).__name__}'s")
    words = rng.bit_generator.state["state"]
    state, inc = words["state"], words["inc"]
    return _U(state >> 64), _U(state & _WORD), _U(inc >> 64), _U(inc & _WORD)


def write_state(rng: np.random.Generator, state: tuple) -> None:
    """Advance ``rng`` to ``state`` (as returned by the compiled samplers)."""
    full = rng.bit_generator.state
    full["state"]["state"] = (int(state[0]) << 64) | int(state[1])
    rng.bit_generator.state = full


def standard_normal(rng: np.random.Generator, shape: tuple[int, ...], out: np.ndarray | None = None) -> np.ndarray:
    """``rng.standard_normal(shape)`` (into ``out`` if given), compiled for numpy's PCG64 (``default_rng``'s).

    Another generator draws its own, into a new array.
    """
    if not isinstance(rng, np.random.Generator) or type(rng.bit_generator) is not np.random.PCG64:
        return rng.standard_normal(shape)
    out = np.empty(shape) if out is None else out
    write_state(rng, _fill(out.reshape(-1), read_state(rng)))
    return out
