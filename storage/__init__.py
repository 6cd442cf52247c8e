"""Persistence: one sqlite database per node (single writer thread) and a content-addressed
blob store."""

from storage.blobs import BlobReader, BlobStore, check_digest
from storage.db import Database, open_sync, run_transaction
from storage.errors import CorruptBlob, SchemaTooNew, StorageClosed, StorageError
from storage.migrations import MIGRATIONS, Migration

__all__ = [
    "MIGRATIONS",
    "BlobReader",
    "BlobStore",
    "CorruptBlob",
    "Database",
    "Migration",
    "SchemaTooNew",
    "StorageClosed",
    "StorageError",
    "check_digest",
    "open_sync",
    "run_transaction",
]
