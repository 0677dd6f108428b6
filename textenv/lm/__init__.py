"""Models and tokenizers by spec string, KV-cached sampling, left-padding helpers.

The bottom layer: it imports nothing else from the package.
"""
