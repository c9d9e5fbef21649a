"""``saqt info`` and ``saqt report``: what a stage folder holds, in a few lines or one HTML page. It may import every layer but fetch."""
