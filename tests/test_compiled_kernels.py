"""The compiled kernels that replace numpy and OpenCV steps of the engine give the same bits as those steps."""

import numpy as np
import pytest

from saqt.distortions.normals import standard_normal


@pytest.mark.parametrize("seed", [0, 1, 2024])
def test_standard_normal_is_numpys_stream_bit_for_bit(seed):
    """A million draws reach the ziggurat's rejection and tail branches; the state after them matches too."""
    ours, theirs = np.random.default_rng(seed), np.random.default_rng(seed)
    for shape in [(1,), (2, 37, 41), (1_000_003,)]:
        assert np.array_equal(standard_normal(ours, shape), theirs.standard_normal(shape))
    assert np.array_equal(ours.random(5), theirs.random(5))
    assert np.array_equal(standard_normal(ours, (7,)), theirs.standard_normal(7))


def test_standard_normal_with_another_bit_generator_defers_to_numpy():
    ours, theirs = np.random.Generator(np.random.Philox(5)), np.random.Generator(np.random.Philox(5))
    assert np.array_equal(standard_normal(ours, (3, 4)), theirs.standard_normal((3, 4)))
