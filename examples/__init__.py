"""Runnable examples that use ``rawpairs`` and ``distill`` together (not part of either library).

``python -m examples.demo`` is the ``make demo`` job.
"""
