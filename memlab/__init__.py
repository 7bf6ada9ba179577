"""memlab: scaling-law experiments on memory architectures for language models."""
