"""reconciler: keeps a mail gateway's TLS files equal to a desired state, atomically and audited."""

__version__ = "0.1.0"
