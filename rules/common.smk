# Helpers shared by every rules/*.smk file. params.yaml is validated once, here, with the
# same schema as the CLI (msmbuild.config), so a bad key or a missing spec file stops the
# workflow at parse time with the key's path in the message.

import json
import shlex
import sys

from msmbuild.config import (check_input_files, check_placed_trees, params_value, unknown_name_error,
                             validate_params)
from msmbuild.layout import Layout
from msmbuild.buildmark import mark_build_started, snakemake_executes

PARAMS_FILE = "params.yaml"
PARAMS = validate_params(config, PARAMS_FILE)
check_input_files(PARAMS, PARAMS_FILE)
# Every path a rule declares comes from the layout (msmbuild/layout.py), the same module the
# commands use to find their inputs and outputs: a path is named once.
LAYOUT = Layout.of(PARAMS)
MSMBUILD = f"msmbuild --params {PARAMS_FILE}"
# A failed job prints its log's error line on the console (the log keeps everything).
ON_ERROR = f"{shlex.quote(sys.executable)} -m msmbuild.joblog"

# A cheap look (stat only) at the checkpoints placed under build/: a file whose size is not
# its stored size is named here, even when Snakemake finds nothing to do.
for _problem in check_placed_trees(PARAMS):
    print(f"msmbuild: corrupt build output {_problem}; run `msmbuild store repair`", file=sys.stderr)

# Each rules/*.smk adds its final outputs here; `rule all` asks for all of them.
TARGETS = {}


def all_targets(wildcards=None):
    """Every final output registered by the included rule files."""
    return [path for paths in TARGETS.values() for path in paths]


class NamedTable(dict):
    """Things params.yaml declares, by name; a name it does not declare (a typo'd target) is a clean error."""

    def __init__(self, items, kind, key):
        super().__init__(items)
        self.kind, self.key = kind, key

    def __missing__(self, name):
        raise unknown_name_error(self.kind, name, self, self.key)


def corpus_config(name):
    """The validated settings of one corpus; an unknown name (a typo'd target) is a clean error."""
    if name not in PARAMS.corpora:
        raise unknown_name_error("corpus", name, PARAMS.corpora, "corpora")
    return PARAMS.corpora[name]


def settings_json(params, *keys, **derived):
    """Canonical JSON of the params.yaml sections a rule depends on (a rerun trigger).

    Keyed by params path ("corpora.small", "backends.offline"), so `msmbuild explain`
    can name the key that changed; derived values (not in params.yaml) go by plain name.
    """
    data = {key: params_value(params, key) for key in keys}
    return json.dumps({**data, **derived}, sort_keys=True)


def corpus_settings(name):
    """What a corpus's outputs depend on in params.yaml."""
    cfg = corpus_config(name)
    return settings_json(PARAMS, f"corpora.{name}", f"backends.{cfg.backend}")


def api_share(name):
    """Model-API requests in flight one generate job may use (its share of `--resources api=N`)."""
    cfg = corpus_config(name)
    if cfg.backend == "anthropic":
        return max(1, PARAMS.backends.anthropic.max_concurrency // 2)
    return 1


# "Spent in this build" counts the model calls made from now on (docs/query.md). Marked
# at parse time because `onstart` does not run when there is nothing to do, and a rerun
# that computes nothing must report $0; dry runs, summaries and cluster jobs do not mark.
if workflow.is_main_process and snakemake_executes(sys.argv[1:]):
    mark_build_started()

