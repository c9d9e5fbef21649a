"""``saqt fetch``: the publishers' dataset archives, downloaded resumably, verified and unpacked where the loaders look. It stands beside the pipeline and imports only saqt.core."""
