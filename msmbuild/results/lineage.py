"""Lineage by content: what each checkpoint was trained from, and which ones are stale.

A checkpoint's ``lineage.json`` (msmbuild.train.action) holds the inputs it was trained
from: the digests of its shards (midtraining), its start checkpoint and the digest of its
AFT data (AFT). The catalog compares them with what the build holds now:

- a midtrained checkpoint is stale when its shards are not the corpus's shards now, or the
  shards are not what the corpus's documents make now (documents regenerated, shards or
  training not rerun);
- an AFT checkpoint is stale when it started from another midtrained checkpoint than the
  one at the arm's midtrain path now, when that one is stale, or when its AFT data file
  has other content now;
- an eval number is stale when the checkpoint it was measured on has other content now,
  or that checkpoint is stale.

``None`` means unknown (no lineage.json: trained before it was recorded; nothing built).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from msmbuild.config import Params
from msmbuild.data.shards import ShardFreshness, load_manifest, shard_digests, shard_freshness
from msmbuild.errors import MsmbuildError
from msmbuild.experiments import Arm
from msmbuild.hashing import digest_dir, digest_file
from msmbuild.layout import Layout
from msmbuild.store import tree_digest
from msmbuild.train.action import read_lineage


class Lineage:
    """Content digests of a build's checkpoints, shards and AFT data, each computed once."""

    def __init__(self, params: Params) -> None:
        self.params = params
        self.layout = Layout.of(params)
        self._digests: dict[Path, str | None] = {}
        self._trees: dict[Path, str | None] = {}
        self._fresh: dict[str, ShardFreshness | None] = {}
        self._spec: dict[str, bool] = {}

    def digest(self, checkpoint: Path | None) -> str | None:
        """The checkpoint's content digest now (what an eval's checkpoint identity records)."""
        if checkpoint is None or not checkpoint.is_dir():
            return None
        if checkpoint not in self._digests:
            self._digests[checkpoint] = digest_dir(checkpoint)
        return self._digests[checkpoint]

    def tree(self, checkpoint: Path | None) -> str | None:
        """The checkpoint's store tree digest now (what a start identity ``tree:<digest>`` names)."""
        if checkpoint is None:
            return None
        if checkpoint not in self._trees:
            self._trees[checkpoint] = tree_digest(checkpoint) if checkpoint.is_dir() else None
        return self._trees[checkpoint]

    def shards(self, corpus: str) -> ShardFreshness | None:
        """Whether the corpus's shards are what its documents make now (None: unknown)."""
        if corpus not in self._fresh:
            try:
                self._fresh[corpus] = shard_freshness(self.params, corpus)
            except MsmbuildError:
                self._fresh[corpus] = None
        return self._fresh[corpus]

    def _current_shards(self, corpus: str) -> list[list[str]] | None:
        try:
            return shard_digests(load_manifest(self.layout.manifest(corpus)))
        except (MsmbuildError, KeyError):
            return None

    def midtrain_stale(self, checkpoint: Path, corpus: str) -> bool | None:
        """True when the midtrained checkpoint was trained on other shards or documents than the
        corpus's now, or the corpus's spec changed since it was built."""
        if checkpoint.is_dir() and self.spec_changed(corpus):
            return True
        lineage = read_lineage(checkpoint) if checkpoint.is_dir() else None
        current = self._current_shards(corpus)
        if lineage is None or current is None:
            return None
        fresh = self.shards(corpus)
        return lineage["inputs"].get("shards") != current or (fresh is not None and not fresh.current)

    def spec_changed(self, corpus: str) -> bool:
        """Whether the corpus's spec has other sections or preamble now than its last build
        recorded (sections.json): what it was trained from will be rebuilt, as ``msmbuild
        status`` says, from the moment the spec is edited."""
        if corpus not in self._spec:
            self._spec[corpus] = _spec_differs(self.params, self.layout, corpus)
        return self._spec[corpus]

    def aft_stale(self, arm: Arm) -> bool | None:
        """True when the arm's AFT checkpoint has another start or other data than the build holds now."""
        checkpoint = self.layout.arm_aft(arm)
        if checkpoint is not None and checkpoint.is_dir() and arm.midtrain and self.spec_changed(str(arm.midtrain)):
            return True
        lineage = read_lineage(checkpoint) if checkpoint is not None and checkpoint.is_dir() else None
        if lineage is None:
            return None
        inputs = lineage["inputs"]
        stale = False
        midtrain = self.layout.arm_midtrain(arm)
        if midtrain is not None:
            tree = self.tree(midtrain)
            stale = (tree is not None and inputs.get("start") != f"tree:{tree}") \
                or bool(self.midtrain_stale(midtrain, str(arm.midtrain)))
        p = arm.params(self.params)
        if arm.aft in p.aft:
            data = self.layout.aft_data(str(arm.aft), p.aft[str(arm.aft)].fraction, arm.aft_sources)
            stale = stale or (data.is_file() and inputs.get("data") != digest_file(data))
        return stale

    def columns(self, checkpoint: Path | None) -> dict[str, Any]:
        """The checkpoints table's lineage columns: digests now, and what it was trained from."""
        lineage = read_lineage(checkpoint) if checkpoint is not None and checkpoint.is_dir() else None
        inputs = lineage["inputs"] if lineage else {}
        return {"digest": self.digest(checkpoint), "tree_digest": self.tree(checkpoint),
                "shard_digests": json.dumps(inputs["shards"]) if "shards" in inputs else None,
                "start": inputs.get("start") or inputs.get("base"),
                "aft_data_digest": inputs.get("data")}

    def eval_stale(self, arm: Arm | None, measured: str | None,
                   checkpoint_stale: dict[str, bool | None]) -> bool | None:
        """True when an eval's checkpoint has other content now than it was measured on, or is stale."""
        if arm is None or measured is None:
            return None
        model = self.layout.arm_model(arm)
        return measured != self.digest(model) or bool(checkpoint_stale.get(str(model)))


def _spec_differs(params: Params, layout: Layout, corpus: str) -> bool:
    """The spec on disk against the sections its corpus was last built from (False if unknown)."""
    from msmbuild.spec import parse_spec

    cfg = params.corpora.get(corpus)
    recorded = layout.sections(corpus)
    if cfg is None or not recorded.is_file():
        return False
    try:
        old = json.loads(recorded.read_text(encoding="utf-8"))
        now = parse_spec(cfg.spec, cfg.spec_variables())
    except (OSError, ValueError, MsmbuildError):
        return False
    return old.get("preamble") != now.preamble or \
        {s["id"]: s["hash"] for s in old.get("sections", [])} != {s.id: s.hash for s in now.sections}

