"""DynamoLeases as the seed's compaction lock items. A lease is expired once `expires` is not after now.

Our leases add the holder's process as `holder_host`, `holder_pid` and
`holder_started` (its start time, epoch seconds): attributes the seed neither
reads nor writes, beside its own layout, so a holder that died on this host can
be taken over at once.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from embedding_assets.domain.models import LockHolder, LockState
from resources.receipt_store.dynamodb_expressions import Expression, dump
from resources.receipt_store.dynamodb_keys import check_owner, lock_key
from resources.receipt_store.dynamodb_records import current_time, iso
from resources.receipt_store.dynamodb_table import DynamoTable
from resources.receipt_store.rules import LeaseOwner

# Our other leases (creating batches, submitting) are items of our own type outside GSI1: the seed lists a
# collection's locks through `GSI1PK = LOCK#<collection>` and knows only its compaction lock there.
LEASE_TYPE = "EMBEDDING_LEASE"


def _is_seed_lock(name: str, collection: str) -> bool:
    return name == f"chroma-{collection}-compaction"


class DynamoLeases(LeaseOwner, DynamoTable):
    """Take, renew, release and read a lease with one conditional write or consistent read each."""

    def acquire_lock(self, name: str, owner: str, ttl_seconds: float, holder: LockHolder | None = None,
                     replacing: str | None = None) -> bool:
        """Take a free or expired lease, renew our own or take one over from `replacing`, with one conditional put."""
        key, collection = lock_key(name)
        check_owner(owner)
        now = current_time()
        expires = iso(now + timedelta(seconds=ttl_seconds))
        item: dict[str, Any] = {"PK": key["PK"]["S"], "SK": "LOCK", "TYPE": LEASE_TYPE, "owner": owner,
                                "expires": expires, "heartbeat": iso(now), "collection": collection}
        if _is_seed_lock(name, collection):
            item |= {"TYPE": "COMPACTION_LOCK", "GSI1PK": f"LOCK#{collection}", "GSI1SK": f"EXPIRES#{expires}"}
        if holder is not None:
            item |= {"holder_host": holder.host, "holder_pid": holder.pid,
                     "holder_started": Decimal(str(holder.started))}
        e = Expression()
        condition = (f"attribute_not_exists(PK) OR {e.n('expires')} < {e.v(iso(now))}"
                     f" OR {e.n('owner')} = {e.v(owner)}")
        if replacing is not None:
            condition += f" OR {e.n('owner')} = {e.v(replacing)}"
        return self._conditional("put_item", Item=dump(item), ConditionExpression=condition, **e.kwargs())[0]

    def heartbeat_lock(self, name: str, owner: str, ttl_seconds: float) -> bool:
        """Extend the lease only while `owner` still holds it (the seed's heartbeat lacks this check).

        Checks the owner only, so an owner may revive its own lease shortly
        after it expired: anyone who had taken it over in between would have
        replaced the owner, so two holders never coexist.
        """
        key, collection = lock_key(name)
        check_owner(owner)
        now = current_time()
        expires = iso(now + timedelta(seconds=ttl_seconds))
        e = Expression()
        update = f"SET {e.n('expires')} = {e.v(expires)}, {e.n('heartbeat')} = {e.v(iso(now))}"
        if _is_seed_lock(name, collection):
            update += f", {e.n('GSI1SK')} = {e.v(f'EXPIRES#{expires}')}"
        return self._conditional("update_item", Key=key, UpdateExpression=update,
                                 ConditionExpression=f"{e.n('owner')} = {e.v(owner)}", **e.kwargs())[0]

    def release_lock(self, name: str, owner: str) -> bool:
        key, _ = lock_key(name)
        e = Expression()
        return self._conditional("delete_item", Key=key, ConditionExpression=f"{e.n('owner')} = {e.v(owner)}",
                                 **e.kwargs())[0]

    def lock_state(self, name: str) -> LockState | None:
        key, _ = lock_key(name)
        lock = self._get(key)
        if lock is None or lock.get("expires", "") <= iso(current_time()):
            return None
        holder = (LockHolder(lock["holder_host"], int(lock["holder_pid"]), float(lock["holder_started"]))
                  if "holder_host" in lock else None)
        return LockState(lock["owner"], datetime.fromisoformat(lock["expires"]).timestamp(), holder)
