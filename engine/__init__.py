"""The top library layer: launching, shared command-line flags, training, evaluation, prediction.

It may import every other package; only the scripts, ``bench`` and ``tests`` import it.
"""
