"""Pure bitemporal logic: interval splitting for writes and vectorised visibility masks. No I/O."""

from .intervals import Piece, plan_put, plan_retract
from .masks import visible_mask

__all__ = ["Piece", "plan_put", "plan_retract", "visible_mask"]
