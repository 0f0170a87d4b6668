"""Who is calling and what they may do: principals, the access policy, API keys, OIDC JWTs,
client certificates, the hash-chained audit log and secret references.

This layer sits under the store and above the models: pure functions and small classes, no Ray,
no web framework. The API, the CLI, the actors and the edge all ask the same :class:`Policy`.
"""

from datawave.datasource.security.audit import (
    AuditEntry,
    AuditProblem,
    AuditReport,
    entry_hash,
    verify_chain,
)
from datawave.datasource.security.policy import (
    BUILTIN_ROLES,
    PERMISSIONS,
    Policy,
    Scope,
    collection_covers,
)
from datawave.datasource.security.principal import Grant, Principal

__all__ = [
    "BUILTIN_ROLES",
    "PERMISSIONS",
    "AuditEntry",
    "AuditProblem",
    "AuditReport",
    "Grant",
    "Policy",
    "Principal",
    "Scope",
    "collection_covers",
    "entry_hash",
    "verify_chain",
]
