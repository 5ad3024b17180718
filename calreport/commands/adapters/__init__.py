"""Adapters: what a use case hands its results to outside the files of record (git, alert delivery)."""
