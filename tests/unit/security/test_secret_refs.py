"""Secret references: env:, file:, literal:, plugins; resolved only where a source connects."""

from __future__ import annotations

from pathlib import Path

import pytest

from datawave.datasource.connectors import ConnectorRegistry, merge_secrets
from datawave.datasource.engines import SourceService
from datawave.datasource.errors import ConnectorError, ValidationFailed
from datawave.datasource.security.secrets import (
    ENTRY_POINT_GROUP,
    SecretResolver,
    parse_reference,
)
from datawave.datasource.store import AesGcmSealer, MetadataStore
from tests.unit.security.plugins import install_plugin


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("env:DB_PASSWORD", ("env", "DB_PASSWORD")),
        ("file:/run/secrets/db", ("file", "/run/secrets/db")),
        ("literal:env:not-a-ref", ("literal", "env:not-a-ref")),
        ("vault:kv/db#password", ("vault", "kv/db#password")),
        ("hunter2", None),
        ("postgresql://u:p@h/db", None),  # URLs are never references
        ("Env:X", None),  # schemes are lowercase
        ("x:short-scheme", None),  # and at least two characters
        ("env:", None),
        ("p@ss:word", None),
    ],
)
def test_what_counts_as_a_reference(value: str, parsed: tuple[str, str] | None) -> None:
    assert parse_reference(value) == parsed


def test_env_reference_resolves_from_the_given_environment_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DW_TEST_PW", "from-os-environ")
    r = SecretResolver(environ={"DB_PW": "s3cret"})

    assert r.resolve("password", "env:DB_PW") == "s3cret"
    with pytest.raises(ConnectorError):
        r.resolve("password", "env:DW_TEST_PW")  # never read behind the caller's back


def test_an_unset_env_reference_names_the_field_not_the_variable() -> None:
    r = SecretResolver(environ={})

    with pytest.raises(ConnectorError) as err:
        r.resolve_all({"password": "env:PROD_DB_PASSWORD_7"})

    assert err.value.context == {"field": "password", "reason": "env_missing"}
    assert "'password'" in err.value.message
    assert "PROD_DB_PASSWORD_7" not in err.value.message


def test_file_reference_reads_the_file_without_its_trailing_newline(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text("s3cret\n")

    assert SecretResolver().resolve("password", f"file:{f}") == "s3cret"


@pytest.mark.parametrize(
    ("ref", "reason"),
    [("file:relative/pw", "file_relative"), ("file:/nonexistent/dw/pw", "file_missing")],
)
def test_bad_file_references(ref: str, reason: str) -> None:
    with pytest.raises(ConnectorError) as err:
        SecretResolver().resolve("password", ref)

    assert err.value.context["reason"] == reason
    assert ref.split(":", 1)[1] not in err.value.message


def test_an_oversized_or_empty_file_is_refused(tmp_path: Path) -> None:
    big, empty = tmp_path / "big", tmp_path / "empty"
    big.write_bytes(b"x" * (64 * 1024 + 1))
    empty.write_text("\n")

    for f, reason in ((big, "too_big"), (empty, "empty")):
        with pytest.raises(ConnectorError) as err:
            SecretResolver().resolve("password", f"file:{f}")
        assert err.value.context["reason"] == reason


def test_literal_escapes_a_secret_that_looks_like_a_reference() -> None:
    assert SecretResolver().resolve("password", "literal:env:HOME") == "env:HOME"
    assert SecretResolver().resolve("password", "plain") == "plain"


def test_an_unknown_scheme_is_an_error_that_does_not_echo_the_value() -> None:
    r = SecretResolver()

    with pytest.raises(ConnectorError) as err:
        r.resolve("password", "hunter:two")
    problems = r.check({"password": "hunter:two", "other": "fine"})

    assert err.value.context["reason"] == "unknown_scheme"
    assert "hunter" not in err.value.message and "two" not in err.value.message
    assert [p["field"] for p in problems] == ["config.password"]
    assert "literal:" in problems[0]["message"] and "hunter" not in problems[0]["message"]


def test_a_provider_given_in_code() -> None:
    class Vault:
        def resolve(self, ref: str) -> str:
            return {"kv/db": "from-vault"}[ref]

    r = SecretResolver(providers={"vault": Vault()})

    assert r.resolve("password", "vault:kv/db") == "from-vault"
    assert r.check({"password": "vault:kv/other"}) == []  # known scheme: resolved later


def test_a_provider_failure_is_reported_without_its_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_plugin(tmp_path, monkeypatch, group=ENTRY_POINT_GROUP, name="leaky", attr="Leaky",
                   source="""
        class Leaky:
            def resolve(self, ref):
                raise KeyError("the secret is dw-provider-leak-42 for " + ref)
        """)  # fmt: skip

    with pytest.raises(ConnectorError) as err:
        SecretResolver().resolve("password", "leaky:team/db")

    assert err.value.context["reason"] == "provider_failed"
    assert "KeyError" in err.value.message
    assert "dw-provider-leak-42" not in err.value.message and "team/db" not in err.value.message


def test_a_plugin_from_its_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_plugin(tmp_path, monkeypatch, group=ENTRY_POINT_GROUP, name="upper", attr="Upper",
                   source="""
        class Upper:
            def resolve(self, ref):
                return ref.upper()
        """)  # fmt: skip
    r = SecretResolver()

    assert "upper" in r.schemes()
    assert r.resolve("password", "upper:abc") == "ABC"


def test_a_plugin_whose_dependency_is_missing_is_disabled_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_plugin(tmp_path, monkeypatch, group=ENTRY_POINT_GROUP, name="needsdep", attr="P",
                   source="import dw_module_that_is_not_installed\nP = object\n")  # fmt: skip

    with pytest.raises(ConnectorError) as err:
        SecretResolver().resolve("password", "needsdep:x")

    assert err.value.context["reason"] == "provider_disabled"
    assert "dw_module_that_is_not_installed" in err.value.message


def test_merge_secrets_resolves_only_when_given_a_resolver() -> None:
    public = {"host": "h", "tls": {"mode": "verify"}}
    stored = {"password": "env:PW", "tls.key_password": "literal:env:x"}
    r = SecretResolver(environ={"PW": "s3cret"})

    assert merge_secrets(public, stored)["password"] == "env:PW"  # what a patch stores again
    full = merge_secrets(public, stored, resolver=r)
    assert full == {"host": "h", "password": "s3cret",
                    "tls": {"mode": "verify", "key_password": "env:x"}}  # fmt: skip


@pytest.fixture
def service(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = MetadataStore.open(
        f"sqlite:///{tmp_path / 'dw.db'}", sealer=AesGcmSealer(b"k" * 32), migrate=True
    )
    svc = SourceService(store, ConnectorRegistry(), shards=2,
                        resolver=SecretResolver(environ={"PGPW": "s3cret"}))  # fmt: skip
    yield svc
    store.close()


def _pg(password: str) -> dict[str, object]:
    return {"name": "refs", "type": "postgresql",
            "config": {"host": "127.0.0.1", "user": "u", "database": "d", "password": password}}  # fmt: skip


def test_registration_stores_the_reference_and_the_owner_resolves_it(service) -> None:  # type: ignore[no-untyped-def]
    rec = service.register(_pg("env:PGPW"))

    assert service.store.get_secrets(rec.id) == {"password": "env:PGPW"}  # stored as written
    conn = service.connector_for(rec)
    assert conn.config.password.get_secret_value() == "s3cret"


def test_registration_with_an_unknown_scheme_stores_nothing(service) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationFailed) as err:
        service.register(_pg("vualt:kv/db"))

    assert [e["field"] for e in err.value.errors] == ["config.password"]
    assert service.store.count_sources() == 0


def test_an_edge_source_may_use_schemes_only_its_edge_knows(service) -> None:  # type: ignore[no-untyped-def]
    service._check_references({"password": "onsite:db"}, "plant-7")  # its edge resolves it

    with pytest.raises(ValidationFailed):
        service._check_references({"password": "onsite:db"}, None)
