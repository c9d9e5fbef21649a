"""``saqt publish``: a labelled set as a standard Parquet dataset with its card and checksums, and its upload to the Hugging Face Hub. It imports saqt.core, saqt.build, saqt.label and saqt.read."""
