"""`@record`: small data classes without the start-up cost of `dataclasses`.

`dataclasses` writes each generated method as source text and `exec`s it: about 0.9 ms per
class here, 15 ms for the classes one send touches, a sixth of mailrelay's own time in a
send. A record gets the same things built from closures instead: an `__init__` taking the
fields in order (positional or by name, defaults and `field(default_factory=...)`), a
`__post_init__` hook, `__repr__`, `__eq__`, `__match_args__` (so `case Point(x, y):`
works), an `__init__.__signature__` for `inspect.signature` and help(), and with
`frozen=True` no assignment and a `__hash__`. Type checkers see it as a dataclass
(PEP 681). `record_fields` gives the field names in order; `replace` a copy with some fields
changed, as `dataclasses.replace` does.

The feature set is frozen at that: a class that needs more uses `dataclasses`. A record does
NOT support `dataclasses.replace` itself (use this module's `replace`), `asdict`/`astuple`,
`fields` or `is_dataclass` (it is no dataclass at run time; use `record_fields`),
`__slots__` (`slots=True`), ordering (`order=`), `kw_only`, `InitVar`,
`field(default=..., init=..., repr=..., compare=...)`, or inheriting fields from a base class
(only the class's own annotations are fields).

(The module is named for what it makes, a data record, so it is not mistaken for the audit
log's records.)
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

if TYPE_CHECKING or sys.version_info >= (3, 11):
    from typing import dataclass_transform
else:  # pragma: no cover - Python 3.10 at run time; the decorator only informs checkers

    def dataclass_transform(**_kwargs: Any) -> Callable[[Any], Any]:
        return lambda f: f


_T = TypeVar("_T")
_C = TypeVar("_C", bound=type)


class _Factory:
    __slots__ = ("make",)

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make


def field(*, default_factory: Callable[[], _T]) -> _T:
    """A default made anew for each instance: `tags: list[str] = field(default_factory=list)`."""
    return _Factory(default_factory)  # type: ignore[return-value]


class _FactoryDefault:
    """What a signature shows for a `field(default_factory=...)` default, as dataclasses do."""

    def __repr__(self) -> str:
        return "<factory>"


_FACTORY_DEFAULT = _FactoryDefault()


def _signature(
    names: tuple[str, ...], annotations: dict[str, Any], defaults: dict[str, Any]
) -> Any:
    """`__init__`'s signature as `inspect.signature` and help() show it (`self`, then the
    fields with their annotations and defaults), the one a dataclass's `__init__` has."""
    import inspect

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [inspect.Parameter("self", kind)]
    for name in names:
        default = defaults.get(name, inspect.Parameter.empty)
        if isinstance(default, _Factory):
            default = _FACTORY_DEFAULT
        params.append(inspect.Parameter(name, kind, default=default, annotation=annotations[name]))
    return inspect.Signature(params, return_annotation=None)


def replace(obj: _T, /, **changes: Any) -> _T:
    """A copy of the record `obj` with `changes` (`dataclasses.replace` for records): every
    field not named keeps its value, so a field added to the class later is never lost."""
    values = {name: getattr(obj, name) for name in record_fields(obj)}
    values.update(changes)
    return type(obj)(**values)


def record_fields(obj: object) -> tuple[str, ...]:
    """The field names of a record class or instance, in order."""
    names: tuple[str, ...] = getattr(obj, "__record_fields__")  # noqa: B009
    return names


@overload
def record(cls: _C, /) -> _C: ...


@overload
def record(*, frozen: bool = False) -> Callable[[_C], _C]: ...


@dataclass_transform(field_specifiers=(field,))
def record(cls: _C | None = None, /, *, frozen: bool = False) -> _C | Callable[[_C], _C]:
    if cls is None:
        return lambda c: _build(c, frozen)
    return _build(cls, frozen)


def _build(cls: _C, frozen: bool) -> _C:
    import inspect  # already loaded by click

    annotations: dict[str, Any] = inspect.get_annotations(cls)
    names = tuple(
        n for n, a in annotations.items() if not str(a).startswith(("ClassVar", "typing.ClassVar"))
    )
    defaults: dict[str, Any] = {}
    for name in names:
        if name in cls.__dict__:
            defaults[name] = cls.__dict__[name]
            if isinstance(defaults[name], _Factory):
                delattr(cls, name)
    set_field = object.__setattr__
    post_init = getattr(cls, "__post_init__", None)
    qualname = cls.__qualname__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if len(args) > len(names):
            raise TypeError(f"{qualname}() takes {len(names)} arguments, {len(args)} given")
        for name, value in zip(names, args, strict=False):
            if name in kwargs:
                raise TypeError(f"{qualname}() got {name!r} twice")
            set_field(self, name, value)
        for name in names[len(args) :]:
            if name in kwargs:
                value = kwargs.pop(name)
            elif name in defaults:
                value = defaults[name]
                if isinstance(value, _Factory):
                    value = value.make()
            else:
                raise TypeError(f"{qualname}() is missing {name!r}")
            set_field(self, name, value)
        if kwargs:
            raise TypeError(f"{qualname}() got an unexpected argument {next(iter(kwargs))!r}")
        if post_init is not None:
            post_init(self)

    def __repr__(self: Any) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in names)
        return f"{qualname}({inner})"

    def __eq__(self: Any, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in names)

    __init__.__qualname__ = f"{qualname}.__init__"
    __init__.__signature__ = _signature(names, annotations, defaults)  # type: ignore[attr-defined]
    cls.__init__ = __init__  # type: ignore[misc]
    cls.__match_args__ = names  # type: ignore[attr-defined,misc]
    cls.__repr__ = __repr__  # type: ignore[assignment]
    cls.__eq__ = __eq__  # type: ignore[assignment]
    cls.__record_fields__ = names  # type: ignore[attr-defined]
    if frozen:

        def __setattr__(self: Any, name: str, value: Any) -> None:
            raise AttributeError(f"{qualname} is frozen: cannot assign {name!r}")

        def __delattr__(self: Any, name: str) -> None:
            raise AttributeError(f"{qualname} is frozen: cannot delete {name!r}")

        def __hash__(self: Any) -> int:
            return hash(tuple(getattr(self, n) for n in names))

        cls.__setattr__ = __setattr__  # type: ignore[assignment]
        cls.__delattr__ = __delattr__  # type: ignore[assignment]
        cls.__hash__ = __hash__  # type: ignore[assignment]
    else:
        cls.__hash__ = None  # type: ignore[assignment]  # mutable and compared by value
    return cls
