"""The ``glint`` command: pretrain, finetune, evaluate and run the GlintIQA model."""

from __future__ import annotations

import typer

from pipelines.cli_common import add_stub

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Train and run the GlintIQA quality model.")

add_stub(app, "glint", "pretrain", 5, "Pretrain GlintIQA on SAQT-IQA shards.")
add_stub(app, "glint", "finetune", 5, "Finetune GlintIQA on an IQA dataset.")
add_stub(app, "glint", "evaluate", 5, "Evaluate a checkpoint (SROCC, PLCC, KRCC, RMSE).")
add_stub(app, "glint", "predict", 5, "Score images with a checkpoint.")
