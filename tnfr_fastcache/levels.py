"""Cache levels, with the upstream TNFR names and values."""

import enum

from .errors import InvalidArgumentError

__all__ = ["CacheLevel", "as_level"]


class CacheLevel(enum.Enum):
    """Cache levels ordered from most persistent to least (same members and values as ``tnfr``).

    - ``GRAPH_STRUCTURE``: topology, adjacency matrices.
    - ``NODE_PROPERTIES``: per-node EPI, νf, θ.
    - ``DERIVED_METRICS``: Si, coherence matrices, ΔNFR.
    - ``TEMPORARY``: short-lived intermediates.
    """

    GRAPH_STRUCTURE = "graph_structure"
    NODE_PROPERTIES = "node_properties"
    DERIVED_METRICS = "derived_metrics"
    TEMPORARY = "temporary"


_BY_NAME = {}
for _member in CacheLevel:
    _BY_NAME[_member] = _member
    _BY_NAME[_member.value] = _member
    _BY_NAME[_member.name] = _member
del _member


def as_level(level):
    """Return the :class:`CacheLevel` that ``level`` names.

    Parameters
    ----------
    level : CacheLevel or str
        A member, its value (``"derived_metrics"``) or its name (``"DERIVED_METRICS"``).
        Upstream TNFR's own ``CacheLevel`` members are accepted too (matched by value).

    Raises
    ------
    InvalidArgumentError
        If ``level`` names no level.
    """
    try:
        return _BY_NAME[level]
    except (KeyError, TypeError):
        pass
    value = getattr(level, "value", None)
    if isinstance(value, str) and value in _BY_NAME:
        return _BY_NAME[value]
    raise InvalidArgumentError(
        f"unknown cache level {level!r}; expected a CacheLevel or one of "
        f"{[m.value for m in CacheLevel]}"
    )
