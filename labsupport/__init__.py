"""Helpers for the Deep Generative Modeling Lab, in layers (ARCHITECTURE.md says which may import which).

``config`` (switches, device, seeds), ``data``, ``losses`` (the reference losses), ``models``,
``metrics``, ``train`` (loops), ``pretrained`` (shipped checkpoints), ``plotting``, ``widgets``,
``checks`` (exercise checks), ``colab`` (the Colab install), and the instructor side:
``course`` (solution -> student build tool) and ``grading``.
"""

__version__ = "0.1.0"
