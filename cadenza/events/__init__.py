"""Events: Segment-spec ingestion, CSV import, dedupe, and the event read side."""

from cadenza.events.csv_import import DuplicateRow, ImportReport, RowError, import_contacts
from cadenza.events.queries import list_events
from cadenza.events.segment import (
    MAX_BATCH_BYTES,
    MAX_MESSAGE_BYTES,
    MESSAGE_TYPES,
    MODELS,
    BatchRequest,
    Rejection,
)
from cadenza.events.service import (
    EventService,
    IngestLimits,
    IngestRequest,
    IngestResult,
    lock_event_log,
)
from cadenza.events.writer import BatchingWriter

__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_MESSAGE_BYTES",
    "MESSAGE_TYPES",
    "MODELS",
    "BatchRequest",
    "BatchingWriter",
    "DuplicateRow",
    "EventService",
    "ImportReport",
    "IngestLimits",
    "IngestRequest",
    "IngestResult",
    "Rejection",
    "RowError",
    "import_contacts",
    "list_events",
    "lock_event_log",
]
