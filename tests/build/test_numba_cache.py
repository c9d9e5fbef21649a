"""Compiled kernels stay cacheable across processes: none takes a compiled function as an argument.

A cached numba function whose argument is another compiled function gets a type that differs in every process, so
each process compiled it again and appended one more entry to the on-disk cache index (129 entries were found
after a day of runs), and two worker processes appending at once broke a build with "underlying object has
vanished". This renders every type and level once and checks every compiled kernel's signatures.
"""

from __future__ import annotations

import importlib
import pkgutil

import numba
import numpy as np
import pytest
from numba.core import types

import saqt.build.distortions
from saqt.build.distortions import PreparedImage, distort

pytestmark = pytest.mark.slow  # end to end: `make test-fast` leaves this module out


def _dispatchers():
    for info in pkgutil.iter_modules(saqt.build.distortions.__path__):
        module = importlib.import_module(f"saqt.build.distortions.{info.name}")
        for name, value in vars(module).items():
            if isinstance(value, numba.core.registry.CPUDispatcher) and value.__module__ == module.__name__:
                yield f"{info.name}.{name}", value


def test_no_compiled_kernel_takes_a_compiled_function_as_an_argument():
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    src = PreparedImage(image)
    for t in range(1, 26):
        for level in range(1, 6):
            distort(src, t, level, seed=level)
    kernels = dict(_dispatchers())
    assert len(kernels) > 20 and any(k.signatures for k in kernels.values())
    function_types = (types.Dispatcher, types.Function, types.FunctionType)
    taking_functions = [
        name for name, k in kernels.items() for sig in k.signatures if any(isinstance(a, function_types) for a in sig)
    ]
    assert not taking_functions
