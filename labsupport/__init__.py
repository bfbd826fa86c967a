"""Helpers for the Deep Generative Modeling Lab.

Flat modules named for what they hold:
``config`` (fast mode), ``data``, ``models``, ``train``, ``plotting``, ``widgets``,
``metrics``, ``checks`` (exercise checks), ``pretrained`` (shipped checkpoints),
``course`` (solution -> student build tool) and ``grading``.
"""

__version__ = "0.1.0"
