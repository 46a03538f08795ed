"""`@record`, the dataclass stand-in without dataclasses' start-up cost."""

from __future__ import annotations

import copy
import dataclasses
import inspect
from typing import ClassVar

import pytest

from mailrelay.datarecord import field, record, record_fields, replace


@record
class Point:
    x: int
    y: int = 0
    tags: list[str] = field(default_factory=list)
    kind: ClassVar[str] = "point"


@record(frozen=True)
class Name:
    first: str
    last: str = ""


@record
class Counted:
    n: int = 0
    seen: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.seen.append(self.n)


def test_init_by_position_and_name_with_defaults() -> None:
    assert Point(1).y == 0
    p = Point(1, 2, ["a"])
    assert (p.x, p.y, p.tags) == (1, 2, ["a"])
    assert Point(y=3, x=4) == Point(4, 3)
    assert record_fields(Point) == ("x", "y", "tags")  # the ClassVar is not a field
    assert Point.kind == "point"


def test_default_factories_are_fresh_per_instance() -> None:
    a, b = Point(1), Point(2)
    a.tags.append("x")
    assert b.tags == []


def test_bad_arguments_are_type_errors() -> None:
    with pytest.raises(TypeError, match="missing 'x'"):
        Point()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected argument 'z'"):
        Point(1, z=2)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="'x' twice"):
        Point(1, x=2)  # type: ignore[misc]
    with pytest.raises(TypeError, match="takes 3 arguments"):
        Point(1, 2, [], 4)  # type: ignore[call-arg]


def test_repr_and_equality() -> None:
    assert repr(Point(1, 2)) == "Point(x=1, y=2, tags=[])"
    assert Point(1) != Point(2)
    assert Point(1) != Name("a")  # another class is never equal
    with pytest.raises(TypeError):
        hash(Point(1))  # mutable: compared by value, not hashable


def test_frozen_records_refuse_assignment_and_hash_by_value() -> None:
    n = Name("Ada", "Lovelace")
    with pytest.raises(AttributeError, match="frozen"):
        n.first = "Bob"  # type: ignore[misc]
    with pytest.raises(AttributeError, match="frozen"):
        del n.last  # type: ignore[misc]
    assert hash(n) == hash(Name("Ada", "Lovelace"))
    assert {n, Name("Ada", "Lovelace")} == {n}


def test_post_init_and_copies() -> None:
    c = Counted(5)
    assert c.seen == [5]
    d = copy.copy(c)
    assert d == c and d is not c
    frozen = copy.deepcopy(Name("Ada"))
    assert frozen == Name("Ada")


@dataclasses.dataclass
class PointDC:
    x: int
    y: int = 0
    tags: list[str] = dataclasses.field(default_factory=list)
    kind: ClassVar[str] = "point"


@dataclasses.dataclass(frozen=True)
class NameDC:
    first: str
    last: str = ""


def _renamed(text: str) -> str:
    return text.replace("PointDC", "Point").replace("NameDC", "Name")


@pytest.mark.parametrize(
    ("rec", "dc", "args"),
    [
        (Point, PointDC, (1,)),
        (Point, PointDC, (1, 2, ["a"])),
        (Name, NameDC, ("Ada",)),
        (Name, NameDC, ("Ada", "Lovelace")),
    ],
)
def test_parity_with_the_equivalent_dataclass(
    rec: type, dc: type, args: tuple[object, ...]
) -> None:
    r, d = rec(*args), dc(*args)
    assert repr(r) == _renamed(repr(d))
    assert rec.__match_args__ == dc.__match_args__  # type: ignore[attr-defined]
    assert str(inspect.signature(rec)) == str(inspect.signature(dc))
    assert str(inspect.signature(rec.__init__)) == str(inspect.signature(dc.__init__))
    assert (r == rec(*args)) == (d == dc(*args)) is True
    assert (r == rec("other")) == (d == dc("other")) is False
    assert (r == d) is False and r.__eq__(d) is NotImplemented  # only its own class
    if dc.__hash__ is None:
        assert rec.__hash__ is None  # mutable: unhashable, as a dataclass without frozen
    else:
        assert hash(r) == hash(rec(*args)) == hash(d)  # both hash the field values
        assert {r, rec(*args)} == {r}


def test_records_take_part_in_pattern_matching() -> None:
    match Point(3, 4):
        case Point(x, y, tags) if not tags:
            assert (x, y) == (3, 4)
        case _:
            pytest.fail("no match")
    match Name("Ada", "Lovelace"):
        case Name(first="Ada", last=last):
            assert last == "Lovelace"
        case _:
            pytest.fail("no match")


def test_replace_keeps_every_field_it_is_not_told_to_change() -> None:
    tags = ["a"]
    p = Point(1, 2, tags)
    q = replace(p, y=5)
    assert q == Point(1, 5, tags) and q.tags is tags and p == Point(1, 2, ["a"])
    assert replace(Name("Ada", "Lovelace"), first="Augusta") == Name("Augusta", "Lovelace")
    with pytest.raises(TypeError, match="unexpected argument 'z'"):
        replace(p, z=1)
