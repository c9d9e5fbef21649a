"""Every type x level pinned bit for bit: SHA-256 (first 16 hex digits) of the uint8 render of a fixed crop.

The digests were recorded from the engine before it was optimised (catalogue version 2: main at 5937c15) and
guard its speed-ups; type 15's were recorded again for catalogue version 3, which changed its denoiser.
A change here changes the dataset. If one is meant, bump the catalogue version in
manifests/distortions/kadid10k.yaml, say what changed in CHANGELOG.md, and record the new digests.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from saqt.build.distortions import PreparedImage, distort

pytestmark = pytest.mark.slow  # end to end: `make test-fast` leaves this module out

SEED = 2024
DIGESTS = {
    1: "370075032a5d9ddd 3e4fd5af542f015e 6fb00be99f843b2c 6ff1c8d1acbe4c0d 402ec1543bcd1342",
    2: "ef2ba7da4e3a5ba2 9930ae43b4877e3b a6e09db71e03d39d 17f25a6644a2a302 96060bd7c76b4ae8",
    3: "370075032a5d9ddd 9f93a93c4a9e4c05 b0106d6edf57d9f3 f5a8ef9e45afd912 40822a63ecf5c382",
    4: "ebb091b3dc26efdc b88e781aefb8d098 9e6aa34b30563d73 be268ce519134539 9e8ed022888d527a",
    5: "a24375476cdcffc9 834de1e75a9f9439 5555859950b4c5a4 31760b2b14616295 0113233d6b40e95c",
    6: "a7c9b327bc656e18 9f561f2fde4e2457 eb60fe0c43fa9ac2 3e3385a65fcdd64f 1ca4f9e9a107357b",
    7: "2cf1bd993d95e39a 4b92909a70e213f5 bf8ca0afcff24b69 2a0cd7e258b1c51c 6cc9893fc3d3b36c",
    8: "370075032a5d9ddd 02a29e92b052ca8e 6e9d62b10f3384b8 91bbcf3c49f938cc f264e53d9f352b74",
    9: "5bec6b0f28e8ac8d 3554dd3b6cfe551a c421c93fb6161885 ded92d0fdb28eadf 6e0806704ccad8f7",
    10: "cfa9156d2a3fe7ac 4484cd96b00f1814 6e051df1ae41e6bf 153cbb297cd8b293 65631345a92df4b9",
    11: "9ad2911c5428192d 54af5a5cba316070 0d9a85603fdd6d05 9723afdd086815f8 f37c72fb6c8cad28",
    12: "4f704483258b6a8c 0649d76a0b6243b9 9b0eeca2331372f5 457309489d13f7ae b7f5d6796d0b4b40",
    13: "3d4e464fed5dadb2 ca07b7558d5d3893 802da73409e79357 5a1529dce5751fc0 cb6cfa5706d7abcc",
    14: "20182f710d1efa03 038950d10fbe41ce 7751517784f2cb14 96a48ac9aaa05110 ff2c54e0a39b0ea2",
    15: "bc33f1df6cd9a9dd c667b6bb5fd80d98 c479e2e4369c0f69 1116a6874522c21d b69d4c7b62aff1c6",
    16: "22bcfd531a35bbc1 c9df7172276e1023 09d237cec469aed0 052244ddccede917 4b25647c43fd42f4",
    17: "147a4852e80d155a 26a31de4b1aec7f8 0f54d6c3b63a8ce5 2468f02253379228 7cb9d3dbf1eecf33",
    18: "ef35458061e8348f 08c146f44fa10f2a 370075032a5d9ddd f3c0039d601aad45 1effd7614bdda6c6",
    19: "da199713b0a03c20 76d57c821e65dc3e 9fcd752cbbb2afca 1d2f8f75b7b238f7 c35d0e9a12318e6f",
    20: "3d594150dbe53f40 da44937d5d92abae 46934318152b3701 5531a13cf5487ea4 84cbd448dde45bd3",
    21: "13d6a409f4253d83 3fab13438f112805 b05b2514340a0211 7050ea11557a8f90 b5b0eca1f8d47e1e",
    22: "6367d91fd5e4ea5a fbcf32d1e1bb5208 1b70579d04d38b08 bb0cac87a4ae97ac e86166d788f3a4b2",
    23: "dc8a3067aa57b684 20b8e9489cc07f98 e1c39d0965fbcfd9 9ff605961606e0dd c03610b4f8224a4f",
    24: "d964af387d20b832 381fd823d648ae74 9133d2c83b47912b b01c041ec3a47e8e d447bd6f266c35b0",
    25: "40d91eac183ef4fb bdd8c2fc4f73f953 6083dee348b63836 a0de073b76608fe6 5f96a3bbbf46b85f",
}


def digest(image: np.ndarray) -> str:
    return hashlib.sha256(image.tobytes()).hexdigest()[:16]


@pytest.fixture(scope="module")
def crop(photo) -> PreparedImage:
    """A 200 x 120 crop of the astronaut photo (face and suit: skin, edges, flat and saturated areas)."""
    return PreparedImage(np.ascontiguousarray(photo[100:220, 150:350]))


def test_identity_cells_return_the_input(crop):
    """The identity cells (1/1, 3/1, 8/1, 18/3) are pinned to the min-max stretched crop itself."""
    assert digest(crop.rgb8) == DIGESTS[18].split()[2]


@pytest.mark.parametrize("t", sorted(DIGESTS))
def test_renders_are_unchanged_bit_for_bit(crop, t):
    got = [digest(distort(crop, t, level, seed=SEED)) for level in range(1, 6)]
    assert " ".join(got) == DIGESTS[t]
