"""jukics.audit: the hash-chained audit log (:mod:`jukics.audit.chain`)."""

from jukics.audit.chain import AuditEvent, AuditLog, VerifyReport, verify

__all__ = ["AuditEvent", "AuditLog", "VerifyReport", "verify"]
