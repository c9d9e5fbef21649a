"""Whether a bank suits the images it labels, from each pristine image's nearest reference and its similarity.

Transfer copies the scores of the references an image is matched to, so it can only help when the bank holds
references close to the images and spreads them over many references. Two signs that it does not, with their
thresholds (``saqt label`` prints the sentence and records the figures in label.json; ``saqt report`` shows it):

- one reference is the nearest for more than ``DOMINANT_SHARE`` of the images (at least ``MIN_IMAGES`` of them):
  most labels are then that one reference's scores, whatever the content (a bank too small for the images);
- the median nearest-reference cosine similarity is below ``LOW_SIMILARITY``: most images borrow their labels
  from unlike content (a bank too far from the images). Similarities depend on the encoder; the threshold sits
  below what the bundled encoders give between photos of like content.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

DOMINANT_SHARE = 0.5
MIN_IMAGES = 5
LOW_SIMILARITY = 0.5


@dataclass(frozen=True)
class BankFit:
    """How the images use the bank: its size, the most used reference and the median nearest similarity."""

    images: int
    references: int
    most_used: str
    most_used_images: int
    median_similarity: float

    @property
    def share(self) -> float:
        """The share of the images whose nearest reference is the most used one."""
        return self.most_used_images / self.images

    def record(self) -> dict:
        """The figures and the sentence, for a manifest."""
        return {**asdict(self), "warning": self.warning()}

    def warning(self) -> str | None:
        """One plain sentence when the bank is too small or too far from the images for transfer to help."""
        signs = []
        if self.images >= MIN_IMAGES and self.share > DOMINANT_SHARE:
            signs.append(
                f"one reference ({self.most_used}) is the nearest for {self.most_used_images:,} of the "
                f"{self.images:,} images ({self.share:.0%}, more than {DOMINANT_SHARE:.0%})"
            )
        if self.median_similarity < LOW_SIMILARITY:
            signs.append(
                f"the median similarity to the nearest reference is {self.median_similarity:.2f} "
                f"(below {LOW_SIMILARITY})"
            )
        if not signs:
            return None
        return (
            f"the bank ({self.references:,} references) looks too small or too far from these images for transfer "
            f"to help: {' and '.join(signs)}; saqt fidelity shows whether the rule still beats the content-agnostic "
            "mean"
        )


def bank_fit(neighbours: Iterable[list[str]], similarities: Iterable[list[float]], references: int) -> BankFit | None:
    """The fit of a bank of ``references`` to the images whose neighbours and their similarities (most similar
    first, one list per image, in the same order) are given; None when no image has neighbours (the mean rule)."""
    nearest = [(n[0], s[0]) for n, s in zip(neighbours, similarities, strict=True) if n]
    if not nearest:
        return None
    ((ref, used),) = Counter(n for n, _ in nearest).most_common(1)
    return BankFit(len(nearest), references, ref, used, float(np.median([s for _, s in nearest])))
