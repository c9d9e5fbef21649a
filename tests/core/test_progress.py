"""``saqt.core.progress.Progress``: in a log (a stream that is not a terminal) each bar's final line appears once."""

from __future__ import annotations

import io

from tqdm import tqdm

from saqt.core.progress import Progress


def _final_lines(bar_class, **kwargs) -> tuple[int, str]:
    log = io.StringIO()
    with bar_class(total=3, desc="build", file=log, **kwargs) as bar:
        for _ in range(3):
            bar.update(1)
    return sum("3/3" in line for line in log.getvalue().replace("\r", "\n").split("\n")), log.getvalue()


def test_a_bar_in_a_log_ends_with_its_final_line_once():
    assert _final_lines(tqdm, mininterval=0, miniters=1)[0] == 2  # tqdm's own close draws the final line again
    count, text = _final_lines(Progress, mininterval=0, miniters=1)
    assert count == 1 and text.endswith("\n")


def test_a_final_count_not_yet_drawn_is_drawn_at_close():
    count, text = _final_lines(Progress, mininterval=1e9)  # no update is drawn: only the start, then the close
    assert count == 1 and "0/3" in text and text.endswith("\n")
