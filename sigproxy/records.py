""":class:`Record`: the base of value objects built on every request (issue 15).

Owns: :class:`Record`. Must not: import anything of sigproxy's.

A per-request value object (the target, the selection, the canonical input, the signature, the signed request,
the exchange, a client's signature and request) is a subclass that writes its ``__init__`` and declares each
field ``Final`` there, and names its fields, in ``__init__``'s order, in ``__match_args__`` (the attribute a
dataclass sets for pattern matching)::

    class Target(Record):
        __match_args__ = ("scheme", "host")

        def __init__(self, scheme: str, host: str) -> None:
            self.scheme: Final = scheme
            self.host: Final = host

Why not a dataclass. This module and its subclasses' modules are compiled with mypyc
(:mod:`sigproxy.compiled`), which makes such a class a native one: its ``__init__`` compiled, its fields a C
struct's, read without a dictionary lookup, and ``Final`` ones read-only at run time as well as to mypy
(assigning one raises :class:`AttributeError`; so does adding an attribute). A dataclass's ``__init__`` is
generated when the class is made and runs in the interpreter, compiled module or not: 1.7k instructions a
record under valgrind, and a proxied GET built eight (4-5 % of its instructions); built and read in a compiled
loop, a native record took 42 ns where a dataclass took 480. (Before ``Record``: a frozen dataclass sets each
field through ``object.__setattr__``, 14.7k instructions for nine fields; a ``NamedTuple`` reads its fields
slower.)

What a dataclass gave and a record keeps, from ``__match_args__``: comparison and hashing by value (two records
are equal when of the same class with equal fields), a ``repr`` naming the fields, and pattern matching by
position. Only run without the compiled modules (``SIGPROXY_PURE_PYTHON=1``), a field can be assigned at run
time (mypy still refuses it).
"""

from __future__ import annotations

from typing import ClassVar

__all__ = ["Record"]


class Record:
    """A value object: equal to a record of the same class with equal fields (:attr:`__match_args__`), hashed
    by them, shown by them."""

    __match_args__: ClassVar[tuple[str, ...]] = ()
    """The fields, in ``__init__``'s order."""

    def _values(self) -> tuple[object, ...]:
        return tuple([getattr(self, name) for name in self.__match_args__])

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Record)  # for mypy: type(other) is type(self)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash((type(self), self._values()))

    def __repr__(self) -> str:
        fields = ", ".join([f"{name}={getattr(self, name)!r}" for name in self.__match_args__])
        return f"{type(self).__qualname__}({fields})"
