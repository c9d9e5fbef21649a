"""The pristine pool: candidates screened in their seeded order, each picture kept once, topped up to the quota.

Every candidate up to the last one kept is read, screened and canonicalised (in parallel, through the stage's
executor); refusals and duplicates (same canonical pixels as an image kept before it) are reported with their
reasons. When the screen refuses some, further candidates are screened, so ``--limit N`` means N images kept.
Decisions are taken in the seeded order on per-image verdicts only, so the pool does not depend on the number
of workers, and a larger limit keeps every image a smaller one kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from saqt.build.pristine import prepare_pristine
from saqt.build.screen import Screen
from saqt.build.sources import Quota, SourceItem, rank
from saqt.core.executor import Executor
from saqt.core.images import ImageDecodeError
from saqt.core.progress import Progress

CHUNK = 16  # candidates per screening task
OVERSHOOT = 1.15  # a top-up round screens this many times the images still wanted (plus a few)


@dataclass
class Pool:
    """The images kept (key order), the candidates refused or dropped as duplicates, and how many were read."""

    kept: list[SourceItem]
    refused: list[tuple[str, str]] = field(default_factory=list)
    duplicates: int = 0
    screened: int = 0


@dataclass(frozen=True)
class _ScreenChunk:
    """Screen a chunk of (position, item): position -> pristine id, or the reason to refuse (picklable)."""

    size: tuple[int, int]
    screen: Screen
    max_pixels: int

    def __call__(self, chunk: list[tuple[int, SourceItem]]) -> list[tuple[int, str | None, str | None]]:
        verdicts = []
        for position, item in chunk:
            try:
                verdicts.append(
                    (position, prepare_pristine(item, self.size, self.screen, self.max_pixels).pristine_id, None)
                )
            except ImageDecodeError as err:
                verdicts.append((position, None, str(err)))
        return verdicts

    def describe(self, chunk: list[tuple[int, SourceItem]]) -> str:
        return f"screening {chunk[0][1].key} and {len(chunk) - 1} more"


def _next_round(order: list[SourceItem], start: int, quota: Quota) -> list[int]:
    """Positions to screen next: from ``start`` on, skipping full classes, about as many as the quota wants."""
    wanted = quota.wanted()
    size = len(order) if wanted is None else int(wanted * OVERSHOOT) + 8
    return [p for p in range(start, len(order)) if quota.open_for(order[p])][:size]


def choose_pool(
    items: list[SourceItem],
    quota: Quota,
    seed: int,
    size: tuple[int, int],
    screen: Screen,
    max_pixels: int,
    executor: Executor,
    progress: bool = True,
) -> Pool:
    """Screen ``items`` in the seeded order until ``quota`` is full; see the module docstring."""
    order = sorted(items, key=lambda it: rank(seed, it))
    task = _ScreenChunk(size, screen, max_pixels)
    pool, seen, start = Pool([]), {}, 0
    positions = [] if quota.full else _next_round(order, start, quota)
    with Progress(total=len(positions), unit="img", desc="screen", disable=not progress) as bar:
        while positions:
            chunks = [[(p, order[p]) for p in positions[i : i + CHUNK]] for i in range(0, len(positions), CHUNK)]
            verdicts = {}
            for done in executor.map_unordered(task, chunks):
                verdicts.update((p, (pid, reason)) for p, pid, reason in done)
                bar.update(len(done))
            for p in range(start, positions[-1] + 1):
                start = p + 1
                item = order[p]
                if not quota.open_for(item):
                    continue
                pool.screened += 1
                pid, reason = verdicts[p]
                if reason is None and pid in seen:
                    pool.duplicates += 1
                    reason = f"duplicate (same pixels as {seen[pid]})"
                if reason is not None:
                    pool.refused.append((item.key, reason))
                    continue
                seen[pid] = item.key
                quota.take(item)
                pool.kept.append(item)
                if quota.full:
                    break
            positions = [] if quota.full else _next_round(order, start, quota)
            bar.total += len(positions)  # the bar counts the candidates screened in this round and those before
    pool.kept.sort(key=lambda it: it.key)
    pool.refused.sort()
    return pool
