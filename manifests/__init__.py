"""Declarative YAML manifests: distortion catalogue, labelled banks, IQA datasets, pristine sources."""
