"""Command-line apps ``saqt`` and ``glint`` and the executors that run their stages."""
