"""What a pass keeps in var_dir: the apply protocol (`transaction`: stage, journal, swap,
roll back, commit), its journal and staged files, the ROOT lock, and the `records` of what was
applied, attempted and suspended. A pass applies all of its changes or none, even across a crash.
"""

from __future__ import annotations

from reconciler import lazy_exports

TYPE_CHECKING = False
if TYPE_CHECKING:
    from reconciler.txn import records
    from reconciler.txn.journal import Journal, UnfinishedJournalError
    from reconciler.txn.lock import RootLock, crashpoint
    from reconciler.txn.staging import ensure_target_dirs, remove_orphan_staging
    from reconciler.txn.transaction import Transaction

__all__ = [
    "crashpoint",
    "ensure_target_dirs",
    "Journal",
    "records",
    "remove_orphan_staging",
    "RootLock",
    "Transaction",
    "UnfinishedJournalError",
]
__getattr__ = lazy_exports(
    __name__,
    {
        "Transaction": "transaction",
        "Journal": "journal",
        "UnfinishedJournalError": "journal",
        "RootLock": "lock",
        "crashpoint": "lock",
        "ensure_target_dirs": "staging",
        "remove_orphan_staging": "staging",
        "records": None,
    },
)
