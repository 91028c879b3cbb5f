"""The aether demo: a small dated data set of a fictional team, shipped inside the package, and a
runner that shows answers changing with valid time and with transaction time.

>>> from aether.demo import run_demo
>>> result = run_demo("demo-store", reset=True)          # doctest: +SKIP
"""

from __future__ import annotations

from ._runner import DATASET, Answer, DemoResult, load_dataset, run_demo

__all__ = ["DATASET", "Answer", "DemoResult", "load_dataset", "run_demo"]
