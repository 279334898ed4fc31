"""The production `ReceiptStore`: the seed system's DynamoDB table, used as it is.

Everything here follows the seed system's table layout: what the seed
writes is read as is, and what this store writes the seed can still read.

Reads. Unembedded items come from `GSI1` (`EMBEDDING_STATUS#NONE`, sort key
`LINE#...`/`WORD#...`, which orders them by image, receipt and line), a
receipt's items from `GSI3`, the merchant from the receipt place item, counts
from `Select=COUNT` queries. Every query follows `LastEvaluatedKey`, so tables
of any size are read a page at a time. Indexes are eventually consistent, so
they only ever propose work: every status change is a conditional write that
decides on the item itself, and batch records found through `GSI1` are
re-read from the table with consistent reads before anyone acts on them.

Items GSI1 does not hold. The seed writes `GSI1PK`/`GSI1SK` on every line and
word; an item without them is invisible to discovery and to the counts (an
index only holds items carrying its keys). Such an item is still read with its
receipt through `GSI3` and a missing `embedding_status` means NONE, so it is
claimed along with its receipt's other lines; every status write also sets
`GSI1SK` if it is missing, so an item the pipeline touched is in the index.

Status writes. One conditional `UpdateItem` per item, on a few threads, not
transactions: a transaction is cancelled as a whole when any one condition
fails, so claiming many contested items that way means resending the rest
again and again, while a single-item write is atomic in DynamoDB and its
outcome is exactly that item's, so two claimers never both win one. (A
transaction would only be needed to claim a receipt's items all or nothing,
and a receipt's requests are built from whatever part of it was won.) An
update changes `embedding_status` and `GSI1PK` together, plus the pipeline's
own attributes (`embedding_batch_id`, `embedding_attempts`,
`embedding_error`), and never rewrites the item, so a concurrent edit of its
text or geometry is never overwritten.

Batch records are the seed's batch summary items: the seed's status (mapped
from our stage, see `SEED_STATUS`), `batch_type`, `openai_batch_id`,
`result_file_id`, `submitted_at` and `receipt_refs` as it expects them, and
our exact record beside them in `pipeline_*` attributes, which its reader
ignores. Item lists live in the object store (the manifest); `receipt_refs`
is cut to fit the 400 KB item limit (`pipeline_receipt_refs_omitted` counts
what was left out). Batch summaries the seed wrote itself have no
`pipeline_stage`; they are not ours and `get_batch`/`list_batches` skip them.

Locks are the seed's compaction lock items. A lock name maps to
`LOCK#<collection>#<name>` / `LOCK`, the collection being the kind the name
mentions (`chroma-lines-compaction` is exactly the seed's lines compaction
lock, `lines-create` becomes `LOCK#lines#lines-create`); a name mentioning no
kind is rejected, since the seed's lock item must name its collection.
Owners are UUID strings, expiry times ISO UTC `+00:00` strings compared as
strings, as the seed does.

Retries. botocore's standard mode retries throttling and server errors; on top
of that, `TransactionConflictException` (an item taken by someone else's
transaction) and throttling that outlasts botocore are retried here with
capped exponential backoff and jitter. A failed condition is never retried:
it means the item is not in the state we asked for.
"""

from __future__ import annotations

from resources.receipt_store.dynamodb_batches import DynamoBatches
from resources.receipt_store.dynamodb_leases import DynamoLeases
from resources.receipt_store.dynamodb_receipts import DynamoReceipts
from resources.receipt_store.dynamodb_status import DynamoStatuses


class DynamoReceiptStore(DynamoReceipts, DynamoStatuses, DynamoBatches, DynamoLeases):
    """`ReceiptStore` on the seed's DynamoDB table (see the module docstring for the rules it keeps).

    Each part is a class of its own over the same table calls (`DynamoTable`): receipts and items,
    status transitions, batch records, leases.
    """
