"""Re-embedding a kind with another model or recipe: build the new collection beside the old, then switch.

A collection holds the vectors of one model, size and input recipe (what text
a vector stands for, see `domain.formatting`). When the configuration names
another, `start_reembed` opens the NEXT snapshot line for it and sends
every SUCCESS item not yet in NEXT back to NONE; from then on the ordinary
pipeline embeds them with the configured model and compaction merges into
NEXT. Search keeps answering from the serving line (with its own model)
the whole time.

While a re-embed runs, SUCCESS means "in the NEXT snapshot", so the asset
check and the compactor's stale-vector removal look at NEXT; the serving
snapshot is frozen (deletions reach it at the switch). After each compaction
into NEXT, `switch_if_complete` checks whether any item the serving snapshot
answers for is still waiting (NONE or PENDING); when none is, the serving
pointer is rewritten to NEXT's version and NEXT is cleared. Dead letters
(FAILED) do not hold the switch up; `status` lists them as ever.

Running `reembed` with the serving model's configuration abandons a re-embed.

Every step is safe to repeat after a crash:
- start runs under the compaction lease and only requeues items NEXT does
  not hold, so running `reembed` again resumes rather than restarts;
- a crash between rewriting the serving pointer and clearing NEXT leaves
  two pointers to the same version, which `compaction_target` finishes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from embedding_assets.domain.formatting import clean_text, item_keys_of_vector
from embedding_assets.domain.lease import Lease, compaction_lease
from embedding_assets.domain.models import Item, Status
from embedding_assets.domain.ports import ReceiptStore, VectorLine
from embedding_assets.domain.vectors import ModelMismatch, Pointer, held_recipe, iter_metadatas
from embedding_assets.steps.consistency import item_keys_in


class NothingToReembed(RuntimeError):
    """The serving collection already holds the configured model, or nothing is published yet."""


@dataclass
class ReembedStart:
    kind: str
    model: str
    dimensions: int | None
    serving_model: str | None
    serving_dimensions: int | None
    requeued: int
    resumed: bool
    abandoned: str | None = None
    recipe: str | None = None
    serving_recipe: str | None = None


Identity = tuple[str | None, int | None, str | None]


def serving_model(serving: VectorLine) -> Identity | None:
    """(model, dimensions, recipe) of the published serving version, or None when nothing is published."""
    pointer = serving.latest()
    if pointer is None or not pointer.published:
        return None
    if pointer.model is not None:
        return pointer.model, pointer.dimensions, held_recipe(serving.kind, pointer.recipe)
    with serving.readable() as collection:  # a pointer from before models were recorded on it: ask the collection
        meta = (collection.metadata if collection is not None else None) or {}
    return meta.get("model"), int(meta.get("dimensions") or 0) or None, held_recipe(serving.kind, meta.get("recipe"))


def _same(kind: str, a: Identity, b: Identity) -> bool:
    return a[0] == b[0] and int(a[1] or 0) == int(b[1] or 0) and held_recipe(kind, a[2]) == held_recipe(kind, b[2])


def start_reembed(store: ReceiptStore, serving: VectorLine, model: str, dimensions: int | None, recipe: str,
                  lease_seconds: float, heartbeat_seconds: float) -> ReembedStart:
    """Open (or resume) the NEXT line for `model` and `recipe`; send the items it does not hold back to NONE."""
    kind = serving.kind
    current = serving_model(serving)
    if current is None:
        raise NothingToReembed(f"no {kind} snapshot is published yet: `run` embeds with {model} from the start")
    nxt = serving.next_line()
    with Lease(store, compaction_lease(kind), lease_seconds, heartbeat_seconds):
        pending = nxt.latest()
        if _same(kind, current, (model, dimensions, recipe)):
            if pending is None or _switch_left_over(serving, pending):
                raise NothingToReembed(
                    f"{kind}: the collection already holds {model} vectors of {dimensions} dimensions "
                    f"(recipe {recipe})"
                )
            return _abandon(store, serving, pending)
        resumed = pending is not None and _same(kind, (pending.model, pending.dimensions, pending.recipe),
                                                (model, dimensions, recipe))
        if not resumed:
            pending = nxt.write_pointer(Pointer.unpublished(model, dimensions, recipe))
        requeued = _requeue_missing_from(store, nxt)
    return ReembedStart(kind, model, dimensions, current[0], current[1], requeued, resumed,
                        recipe=recipe, serving_recipe=current[2])


def _requeue_missing_from(store: ReceiptStore, line: VectorLine) -> int:
    """SUCCESS items the line's latest published version holds no vector for, or one of other text, go back
    to NONE.

    Other text: an item corrected while the other line was being built was
    embedded into that line (its batch, not the one this line's vector
    came from); this line still holds the vector of its old text.
    """
    success = {item.key: item for item in store.items_with_status(line.kind, Status.SUCCESS.value)}
    held: set[str] = set()
    outdated: set[str] = set()
    with line.readable() as collection:
        for vector_id, meta in iter_metadatas(collection) if collection is not None else ():
            keys = item_keys_of_vector(vector_id, meta or {})
            held.update(keys)
            items = [success[key] for key in keys if key in success]
            if len(items) == len(keys) and _of_other_text(items, meta or {}):
                outdated.update(keys)
    keys = [key for key in success if key not in held or key in outdated]
    return store.requeue(line.kind, Status.SUCCESS.value, keys)


def _of_other_text(items: list[Item], meta: dict[str, Any]) -> bool:
    """Whether a vector made by another batch than the items' own stands for other text than theirs now
    (a vector without a batch, from before batches were recorded, is taken as it is)."""
    batch = meta.get("batch_id")
    return (bool(batch) and any(item.batch_id != batch for item in items)
            and " ".join(clean_text(item.text) for item in items) != meta.get("text"))


def _switch_left_over(serving: VectorLine, pending: Pointer) -> bool:
    """NEXT names the very version serving already does: a switch was made but NEXT not yet cleared."""
    current = serving.latest()
    return pending.published and current is not None and current.version == pending.version


def _abandon(store: ReceiptStore, serving: VectorLine, pending: Pointer) -> ReembedStart:
    """Back to the serving model: drop NEXT and send again what only NEXT held (items new since the start).

    Items not yet re-embedded are NONE or PENDING; they are embedded again
    with the serving model, and the serving snapshot drops their old vectors
    at its next compaction until then.
    """
    serving.next_line().clear()
    requeued = _requeue_missing_from(store, serving)
    current = serving.latest()
    if current is None:
        raise NothingToReembed(f"no {serving.kind} snapshot is published: nothing to go back to")
    recipe = held_recipe(serving.kind, current.recipe)
    return ReembedStart(serving.kind, current.model or "", current.dimensions, current.model, current.dimensions,
                        requeued, False, abandoned=f"{pending.model} ({pending.dimensions} dimensions, recipe "
                        f"{pending.recipe})", recipe=recipe, serving_recipe=recipe)


def compaction_target(serving: VectorLine, model: str, dimensions: int | None, recipe: str) -> VectorLine:
    """The line a compaction with the configured model writes to, finishing a half-done switch first.

    Raises ModelMismatch with what to do when the configuration fits neither line.
    """
    nxt = serving.next_line()
    pending = nxt.latest()
    if pending is None:
        return serving
    if _switch_left_over(serving, pending):
        nxt.clear()
        return serving
    problem = configuration_problem(serving, model, dimensions, recipe)
    if problem:
        raise ModelMismatch(problem)
    return nxt


def configuration_problem(serving: VectorLine, model: str, dimensions: int | None, recipe: str) -> str | None:
    """Why compaction with this model and recipe could not merge into the kind's collections, or None."""
    kind = serving.kind
    variables = f"EMBEDDING_MODEL/EMBEDDING_DIMENSIONS/{kind.upper()}_RECIPE"
    building = serving.next_line().latest()
    if building is not None and not _switch_left_over(serving, building):
        if _same(kind, (building.model, building.dimensions, building.recipe), (model, dimensions, recipe)):
            return None
        return (
            f"{kind}: a re-embed to {building.model} ({building.dimensions} dimensions, recipe {building.recipe}) "
            f"is under way but the configuration asks for {model} ({dimensions}, recipe {recipe}): set {variables} "
            f"back to finish it, or run `receipt-embeddings reembed --kind {kind}` to re-embed with {model} instead"
        )
    held = serving_model(serving)
    if held is None or _same(kind, held, (model, dimensions, recipe)):
        return None
    return (
        f"{kind}: the collection holds {held[0]} vectors of {held[1]} dimensions (recipe {held[2]}) but the "
        f"configuration asks for {model} with {dimensions} (recipe {recipe}): set {variables} back, or run "
        f"`receipt-embeddings reembed --kind {kind}` to build a {model} collection beside it"
    )


def waiting_for(store: ReceiptStore, serving: VectorLine) -> int:
    """Items the serving snapshot answers for that the NEXT line does not hold yet (NONE or PENDING)."""
    if serving.latest() is None:
        return 0
    answered = item_keys_in(serving)
    return sum(
        item.key in answered
        for status in (Status.NONE, Status.PENDING)
        for item in store.items_with_status(serving.kind, status.value)
    )


def switch_if_complete(store: ReceiptStore, serving: VectorLine) -> Pointer | None:
    """Make NEXT's published version the serving one once nothing the old one answers for is waiting.

    The caller holds the compaction lease and has just published NEXT.
    """
    nxt = serving.next_line()
    pending = nxt.latest()
    if pending is None or not pending.published or waiting_for(store, serving):
        return None
    pointer = serving.write_pointer(pending)
    nxt.clear()
    return pointer


def reembed_progress(store: ReceiptStore, serving: VectorLine) -> dict[str, Any] | None:
    """Where a running re-embed stands, for `status`; None when none runs."""
    pending = serving.next_line().latest()
    if pending is None:
        return None
    current = serving.latest()
    return {
        "to_model": pending.model,
        "to_dimensions": pending.dimensions,
        "to_recipe": pending.recipe,
        "next_version": pending.version or None,
        "next_vectors": pending.vectors,
        "serving_model": current.model if current else None,
        "serving_recipe": held_recipe(serving.kind, current.recipe) if current else None,
        "serving_version": current.version if current else None,
        "waiting": waiting_for(store, serving),
    }
