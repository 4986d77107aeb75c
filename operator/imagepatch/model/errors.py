"""The one error the model raises: a custom resource field that is not valid.

Parsing stops at the first bad field and names it by its full path
(``spec.rollout.waves[1].soak``), so the reconciler can put the message in a
``Stalled``/``InvalidSpec`` condition unchanged and a user can find the field.
"""

from __future__ import annotations

__all__ = ["SpecError"]


class SpecError(ValueError):
    """A field of a custom resource is missing, of the wrong type, or out of range.

    ``str(error)`` is ``"<field>: <message>"``, e.g.
    ``"spec.rollout.healthyFor: 'soon' is not a duration: ..."``.
    """

    field: str
    message: str

    def __init__(self, field: str, message: str) -> None:
        # Both go to ValueError.args, so the exception pickles and copies as
        # itself (a formatted single arg would not survive cls(*args)).
        super().__init__(field, message)
        self.field = field
        self.message = message

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"

    def __repr__(self) -> str:
        return f"SpecError({self.field!r}, {self.message!r})"
