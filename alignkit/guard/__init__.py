"""Reward-hacking guard: detectors over PPO metric histories and the actions they take.

``config.GuardConfig`` (the ``guard`` section of the run config), ``detectors`` (pure
functions returning an ``Alarm`` or None), ``guard.Guard`` (the PPO callback) and
``demo`` (``alignkit demo reward-hacking``). This module imports nothing heavy, so
``alignkit.config`` can import the config from here.
"""

from alignkit.guard.config import GuardConfig

__all__ = ["GuardConfig"]
