"""The access policy: roles -> permissions, grants -> scopes, collection hierarchy."""

from __future__ import annotations

import pytest

from datawave.datasource.errors import ConfigError, Forbidden
from datawave.datasource.security import Grant, Policy, Principal, collection_covers


def who(*grants: Grant) -> Principal:
    return Principal(id="k1", kind="apikey", name="t", grants=grants)


@pytest.mark.parametrize(
    ("granted", "collection", "covered"),
    [
        ("finance", "finance", True),
        ("finance", "finance/emea", True),
        ("finance/", "finance/emea/paris", True),
        ("finance", "financeX", False),
        ("finance/emea", "finance", False),
        ("finance", None, False),
    ],
)
def test_collection_hierarchy(granted: str, collection: str | None, covered: bool) -> None:
    assert collection_covers(granted, collection) is covered


def test_builtin_roles_nest() -> None:
    p = Policy()
    viewer, operator, admin = (p.roles[r] for r in ("viewer", "operator", "admin"))
    assert viewer < operator < admin
    assert "sources:write" not in viewer and "sources:write" in operator
    assert "apikeys:admin" in admin and "apikeys:admin" not in operator


def test_collection_grant_scopes_sources() -> None:
    p = Policy()
    me = who(Grant(role="operator", collection="finance"))
    assert p.allows(me, "sources:write", collection="finance/emea")
    assert not p.allows(me, "sources:write", collection="hr")
    assert not p.allows(me, "sources:write")  # global action needs a global grant
    with pytest.raises(Forbidden) as err:
        p.require(me, "sources:write", collection="hr")
    assert err.value.context["permission"] == "sources:write"


def test_source_grant_by_id_or_name() -> None:
    p = Policy()
    me = who(Grant(role="viewer", source="s-1"))
    assert p.allows(me, "sources:read", collection="any", source_id="s-1")
    assert p.allows(me, "sources:read", source_name="s-1")
    assert not p.allows(me, "sources:read", source_id="s-2", collection="any")
    assert not p.allows(me, "sources:test", source_id="s-1")  # viewer cannot test


def test_global_only_permissions_ignore_scoped_grants() -> None:
    p = Policy()
    scoped_admin = who(Grant(role="admin", collection="finance"))
    assert p.scope(scoped_admin, "apikeys:admin").empty
    assert p.allows(scoped_admin, "audit:read", collection="finance")
    assert p.allows(who(Grant(role="admin")), "apikeys:admin")


def test_scope_unions_grants() -> None:
    p = Policy()
    me = who(Grant(role="viewer", collection="a"), Grant(role="viewer", source="s-9"),
             Grant(role="operator", collection="b"))  # fmt: skip
    read = p.scope(me, "sources:read")
    assert read.collections == {"a", "b"} and read.sources == {"s-9"}
    write = p.scope(me, "sources:write")
    assert write.collections == {"b"} and not write.sources
    assert write.covers(collection="b/x") and not write.covers(collection="a")


def test_no_grants_no_access() -> None:
    p = Policy()
    nobody = who()
    assert p.scope(nobody, "sources:read").empty
    assert not p.any_scope(nobody, "sources:read")
    assert not p.allows(nobody, "sources:read", collection="x")


def test_custom_roles_are_validated() -> None:
    p = Policy({"auditor": ["audit:read", "sources:read"]})
    me = who(Grant(role="auditor", collection="finance"))
    assert p.allows(me, "audit:read", collection="finance")
    assert not p.allows(me, "sources:write", collection="finance")
    with pytest.raises(ConfigError, match="unknown permission"):
        Policy({"bad": ["sources:nuke"]})
    with pytest.raises(ConfigError, match="built-in"):
        Policy({"admin": ["sources:read"]})
    with pytest.raises(ConfigError, match="unknown role"):
        p.check_role("root")


def test_unknown_role_in_grant_confers_nothing() -> None:
    p = Policy()
    assert p.scope(who(Grant(role="superuser")), "sources:read").empty
