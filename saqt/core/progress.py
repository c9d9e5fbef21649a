"""Progress bars: tqdm's, except that in a log (output that is not a terminal) each bar's final line appears once.

tqdm redraws a bar by writing ``\\r`` and the new line; on closing it draws the final line again, which a terminal
overwrites in place but a log keeps: every bar would end with its last line twice. ``Progress`` skips that redraw
when the line it last drew already showed the final count.
"""

from __future__ import annotations

from tqdm import tqdm


class Progress(tqdm):
    """A tqdm bar whose close draws the final line only if it is not already the last one drawn."""

    def close(self) -> None:
        """Close the bar (see the module docstring)."""
        self._closing = True
        super().close()

    def display(self, msg: str | None = None, pos: int | None = None) -> bool | None:
        """Draw the bar, unless closing it would draw again the count already shown, in a log."""
        if getattr(self, "_closing", False) and msg is None and self.n == self.last_print_n and not _terminal(self.fp):
            return None
        return super().display(msg, pos)


def _terminal(stream) -> bool:
    """Whether ``stream`` (tqdm's wrapper of it) is a terminal."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed, or no such method
        return False
