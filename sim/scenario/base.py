"""Building blocks shared by every scenario section."""

from __future__ import annotations

import typing
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class Section(BaseModel):
    """Base of every scenario section: frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)  # `true` is not a batch size


def union_tags(union: object, tag: str) -> tuple[str, ...]:
    """The YAML names of a discriminated union's members (``process`` of the arrival kinds, ...), read from
    the models themselves so the list cannot drift from them."""
    members = typing.get_args(typing.get_args(union)[0]) if typing.get_origin(union) is Annotated else ()
    return tuple(typing.get_args(m.model_fields[tag].annotation)[0] for m in members)
