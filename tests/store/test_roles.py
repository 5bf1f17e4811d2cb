"""The Store's role protocols: they partition its methods, and both stores provide every role."""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable

import pytest

from hub.store import Store
from hub.store.postgres import PostgresStore
from hub.store.roles import ROLES
from hub.store.sqlite import SqliteStore

#: Public methods a store has beyond the Store protocol (PostgreSQL's own maintenance).
STORE_SPECIFIC = {SqliteStore: set[str](), PostgresStore: {"vacuum_hot_tables"}}


def methods(protocol: type) -> set[str]:
    """The methods `protocol` declares itself (not those it inherits)."""
    return {name for name, value in vars(protocol).items() if inspect.isfunction(value) and not name.startswith("_")}


def declared(protocol: type) -> set[str]:
    """The methods and attributes `protocol` declares itself."""
    return methods(protocol) | set(vars(protocol).get("__annotations__", {}))


def test_store_is_the_union_of_its_roles_and_declares_nothing_else() -> None:
    assert declared(Store) == set()
    assert set(ROLES) <= set(Store.__mro__)
    assert {base for base in Store.__bases__ if base.__name__ != "Protocol" and base is not object} == set(ROLES)


def test_roles_are_disjoint() -> None:
    for a, b in itertools.combinations(ROLES, 2):
        assert declared(a) & declared(b) == set(), (a.__name__, b.__name__)


@pytest.mark.parametrize("store_class", [SqliteStore, PostgresStore], ids=["sqlite", "postgres"])
def test_every_public_store_method_belongs_to_one_role(store_class: type) -> None:
    in_roles = set().union(*(methods(role) for role in ROLES))
    public = {
        name for name, value in inspect.getmembers(store_class)
        if not name.startswith("_") and inspect.iscoroutinefunction(value)
    }  # fmt: skip
    assert public - STORE_SPECIFIC[store_class] - in_roles == set()
    assert in_roles <= public


def parameters(function: Callable[..., object]) -> list[tuple[str, object, object]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


@pytest.mark.parametrize("store_class", [SqliteStore, PostgresStore], ids=["sqlite", "postgres"])
def test_store_methods_have_the_roles_signatures(store_class: type) -> None:
    for role in ROLES:
        for name in methods(role):
            assert parameters(getattr(store_class, name)) == parameters(getattr(role, name)), name


async def test_both_stores_provide_every_role(store: Store) -> None:
    for role in ROLES:
        assert isinstance(store, role), role.__name__
    assert isinstance(store, Store)
    assert isinstance(object(), Store) is False
