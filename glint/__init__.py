"""GlintIQA: the no-reference IQA model pretrained on SAQT-IQA (model and training arrive in a later release)."""
