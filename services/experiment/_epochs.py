"""Weight epochs: the weights visitors first seen in each period are assigned
with (:mod:`litho.assignment`). Stored on the experiment as
``epochs: [{since, weights: {variantId: bp}}]``, oldest first; the last
epoch's weights are the experiment's ``servingWeights``.

An experiment is created with one epoch of its variants' own weights; a
draft's new variants replace it with one of theirs; each bandit reweighting
appends one. Past the limit the second and third merge (the second's
``since``, the third's weights), so the list stays bounded.

The first epoch is never merged: a visitor id the caller gives (``?vid=``)
carries no time and is always assigned with the first epoch
(:func:`litho.assignment.epoch_of`), so that epoch's weights must never
change while the experiment runs, or such visitors would switch variant.
Merging only moves visitors first seen in the second epoch's period, onto
the weights of the third.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from litho.assignment import Epoch


def own_weights(variants: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """The variants' own weights by id, in their order."""
    return {str(v["id"]): int(v["weight"]) for v in variants}


def first_epochs(since: float, variants: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One epoch of the variants' own weights."""
    return [{"since": since, "weights": own_weights(variants)}]


def stored_epochs(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The document's epochs; one of its variants' weights for a document
    stored before epochs existed."""
    epochs = doc.get("epochs")
    if isinstance(epochs, list) and epochs:
        return [dict(e) for e in epochs]
    return first_epochs(float(doc["createdAt"]), doc.get("variants") or ())


def appended(epochs: Sequence[Mapping[str, Any]], since: float, weights: Mapping[str, int],
             *, max_epochs: int) -> list[dict[str, Any]]:
    """``epochs`` and a new last one; while over ``max_epochs`` (at least 2)
    the second and third merge, the first kept as it is."""
    out = [dict(e) for e in epochs]
    out.append({"since": since, "weights": dict(weights)})
    while len(out) > max(max_epochs, 2):
        out[1:3] = [{"since": out[1]["since"], "weights": out[2]["weights"]}]
    return out


def assignment_epochs(doc: Mapping[str, Any]) -> tuple[Epoch, ...]:
    """The epochs as :func:`litho.assignment.assign` takes them: weights in
    the variants' order (a variant an epoch does not name weighs 0)."""
    order = [str(v["id"]) for v in doc.get("variants") or ()]
    return tuple(
        Epoch(since=float(e["since"]),
              weights=tuple((vid, int((e.get("weights") or {}).get(vid) or 0))
                            for vid in order))
        for e in stored_epochs(doc))
