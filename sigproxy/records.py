"""``@record``: the class decorator for value objects built on every request (issue 15).

Owns: :func:`record`. Must not: import anything of sigproxy's.

A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__`` (its own ``__setattr__``
refuses): under valgrind, 14.7k instructions for nine fields against 3.1k for a plain slotted dataclass. A
proxied GET builds about thirty such fields (target, selection, canonical input, signature, signed request,
exchange; on a ``client_secret`` connection also the client's request and signature): 7 % of its instructions.
A ``NamedTuple`` builds faster but reads slower (its fields are not slots, so CPython 3.11 can't specialise the
attribute loads), and came out 3 % behind.

So ``@record`` classes are frozen for the type checker (mypy reads :func:`~typing.dataclass_transform`'s
``frozen_default``: assigning a field is an error, ``dataclasses.replace`` makes a changed copy) and plain slotted
dataclasses at run time, hashed and compared by value as a frozen one is. Use it only for objects built per
request or per chunk; everything else stays ``@dataclass(frozen=True, slots=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from typing_extensions import dataclass_transform

__all__ = ["record"]

_T = TypeVar("_T")


@dataclass_transform(frozen_default=True)
def record(cls: type[_T]) -> type[_T]:
    """``cls`` as a slotted dataclass, compared and hashed by its fields; frozen to mypy (module docstring)."""
    return dataclass(slots=True, unsafe_hash=True)(cls)
