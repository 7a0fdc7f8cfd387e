"""The configuration's error types: :class:`ConfigError` for callers, and the carrier
of the cross-field problems, each with its own key path."""

from __future__ import annotations

from collections.abc import Sequence


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` has one line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def key_path(loc: Sequence[str | int]) -> str:
    """``nodes[0].dsn`` from pydantic's location ``("nodes", 0, "dsn")``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


class CrossFieldProblems(ValueError):
    """Raised by Config's cross-field check: several problems, each with its own key path.

    ``names`` are the nodes' names, in file order: a problem with a node's DSN names
    the node next to the key path."""

    def __init__(
        self, problems: list[tuple[tuple[str | int, ...], str]], names: Sequence[str] = ()
    ) -> None:
        self.problems = problems
        self.names = list(names)
        super().__init__("; ".join(f"{self.where(loc)}: {msg}" for loc, msg in problems))

    def where(self, loc: tuple[str | int, ...]) -> str:
        """The key path of ``loc``, with the node's name after a node's DSN."""
        path = key_path(loc)
        if (
            len(loc) == 3 and loc[0] == "nodes" and isinstance(loc[1], int)
            and loc[2] in ("dsn", "replication_dsn") and loc[1] < len(self.names)
        ):
            return f"{path} ({self.names[loc[1]]})"
        return path


def os_reason(exc: OSError) -> str:
    """Why a file could not be read, for messages: the system's word, else the class."""
    return exc.strerror or type(exc).__name__
