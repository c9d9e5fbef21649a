"""Derived seeds: stable across processes, sensitive to every part."""

import subprocess
import sys

from saqt.core.seeding import derive_seed


def test_derived_seeds_are_stable_distinct_and_in_range():
    a = derive_seed(0, "abc", 3, 2)
    assert a == derive_seed(0, "abc", 3, 2)
    assert 0 <= a < 2**63
    others = {derive_seed(1, "abc", 3, 2), derive_seed(0, "abd", 3, 2), derive_seed(0, "abc", 2, 3)}
    assert a not in others and len(others) == 3
    assert derive_seed("1", "23") != derive_seed("12", "3")


def test_derived_seeds_do_not_depend_on_python_hash_randomisation():
    code = "from saqt.core.seeding import derive_seed; print(derive_seed(5, 'img', 7, 1))"
    outs = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": str(h)}
        ).stdout
        for h in (1, 2)
    }
    assert outs == {f"{derive_seed(5, 'img', 7, 1)}\n"}
