"""Data: grain sources for synthetic tasks and text, and the pipelines that batch and prefetch them."""
