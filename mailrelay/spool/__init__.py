"""The spool: messages waiting for another try, and messages held until the configuration
allows sending them.

One job per module: `entry` (QueuedMessage, HeldMessage and their file format), `files`
(writing, locking and moving files so that a crash loses nothing), `store` (the spool
folder: queued, failed, corrupt and held messages), `backoff` (when a message is tried again) and
`flush` (trying every due message; `Spool` is the store with its flush). Every name callers
use is re-exported here.
"""

from mailrelay.spool.backoff import next_try_time, retry_delay
from mailrelay.spool.entry import (
    CORRUPT,
    FAILED,
    HELD,
    ID_ALPHABET,
    ID_LENGTH,
    SCHEMA,
    SUFFIX,
    HeldMessage,
    QueuedMessage,
    new_queue_id,
)
from mailrelay.spool.files import SpoolError
from mailrelay.spool.flush import FlushItem, FlushReport, Sender, Spool
from mailrelay.spool.store import (
    QueueIdBusy,
    SpoolStore,
    UnknownQueueId,
    default_spool_dir,
)

__all__ = [
    "CORRUPT",
    "FAILED",
    "HELD",
    "ID_ALPHABET",
    "ID_LENGTH",
    "SCHEMA",
    "SUFFIX",
    "FlushItem",
    "FlushReport",
    "HeldMessage",
    "QueueIdBusy",
    "QueuedMessage",
    "Sender",
    "Spool",
    "SpoolError",
    "SpoolStore",
    "UnknownQueueId",
    "default_spool_dir",
    "new_queue_id",
    "next_try_time",
    "retry_delay",
]
