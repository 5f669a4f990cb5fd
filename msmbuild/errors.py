"""User-facing errors. The CLI turns every MsmbuildError into a one-line message and exit 2."""

from __future__ import annotations


class MsmbuildError(Exception):
    """An error caused by the user's input or environment, reported without a traceback."""

    exit_code = 2


class ParamsError(MsmbuildError):
    """params.yaml is malformed: invalid YAML, an unknown key or a wrong type."""


class SpecError(MsmbuildError):
    """A spec file cannot be parsed; the message names the file and line."""


class StoreError(MsmbuildError):
    """The content-addressed store is missing an object or cannot be written."""


class CorruptObjectError(StoreError):
    """An object's bytes do not hash to its name."""


class RemoteError(StoreError):
    """The store remote failed one operation (unreachable, or a path it cannot hold)."""


class LeaseLostError(StoreError):
    """This process no longer holds the lease of the action it computes (taken over as stale)."""


class DiskFullError(StoreError):
    """The filesystem holding the store (or the build) ran out of space."""


class UnsafeTreeError(StoreError):
    """A tree manifest has an entry that could write outside its destination (or is malformed)."""


class BudgetError(MsmbuildError):
    """Generating would cross a corpus's budget_usd; raised before the requests are sent."""


class BackendError(MsmbuildError):
    """A generation backend failed in a way that retrying will not fix."""


class TrainingInputError(MsmbuildError):
    """A model, tokenizer, shard or dataset is unfit for training; raised before training starts."""


class EvalInputError(MsmbuildError):
    """A checkpoint or eval data file is missing or malformed; the message names it."""


class ModelInputError(TrainingInputError, EvalInputError):
    """A checkpoint or tokenizer is missing or cannot be loaded (for training or for evals)."""


class AuditError(MsmbuildError):
    """The contamination audit cannot run (bad settings or inputs)."""


class ContaminationError(MsmbuildError):
    """A held-out eval item matches a training input above the audit's thresholds."""


class RehearsalError(MsmbuildError):
    """A step of `msmbuild rehearse` failed; the message is that step's one-line error."""

    exit_code = 1


class PreflightError(MsmbuildError):
    """A recipe that cannot work (msmbuild.preflight): one line per failed check, each naming a params key."""
