"""``msmbuild store``: stats, verify, gc, push, pull."""

from __future__ import annotations

import json

import click

from msmbuild.cli import load_ctx_params
from msmbuild.errors import StoreError


def _store(ctx: click.Context):
    from msmbuild.config import open_store

    params = load_ctx_params(ctx)
    return params, open_store(params)


@click.group()
def store() -> None:
    """Inspect and maintain the content-addressed store."""


@store.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def stats(ctx: click.Context, as_json: bool) -> None:
    """Objects, bytes, actions by kind and recorded cost."""
    _params, s = _store(ctx)
    info = s.stats()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"store    {info['root']}")
    click.echo(f"remote   {info['remote'] or '-'}")
    click.echo(f"objects  {info['objects']} ({info['bytes'] / 1e6:.1f} MB)")
    click.echo(f"actions  {info['actions']}")
    for kind, n in sorted(info["actions_by_kind"].items()):
        click.echo(f"  {kind:<20} {n}")
    click.echo(f"cost     ${info['cost_usd']:.4f} (all calls ever recorded in this store; see docs/query.md)")


@store.command()
@click.pass_context
def verify(ctx: click.Context) -> None:
    """Re-hash every object and inline value, check every action's outputs exist; exit 1 on problems."""
    from msmbuild.generate.calls import CutOff

    params, s = _store(ctx)
    cut = CutOff()  # cut-off model answers, found in verify's one pass over the records
    report = s.verify(visit=lambda key, record: cut(key, record, s))
    click.echo(f"checked {report.objects_checked} objects, {report.actions_checked} actions")
    affected = s.affected_paths(params.build_dir, report.corrupt) if report.corrupt else {}
    for d in report.corrupt:
        click.echo(f"corrupt  {s.object_path(d)}")
        for path in affected.get(d, []):
            click.echo(f"  affects  {path}")
    for d in report.missing:
        click.echo(f"missing  {d}")
    for k in report.bad_actions:
        click.echo(f"bad action  {s.action_path(k)} (malformed, or an inline value that does not hash to its digest)")
    for d, why in report.bad_trees.items():
        click.echo(f"unsafe tree  {s.object_path(d)}: {why}")
    for path in report.strays:
        click.echo(f"stray    {path} (not an object; skipped, `msmbuild store gc` quarantines it)")
    copies = s.placed_mismatches(params.build_dir)
    for path, obj in copies:
        click.echo(f"changed  {path} (a copy that no longer hashes to its object {obj[:12]})")
    parts = _changed_partitions(params)
    for problem in parts:
        if problem.why in ("missing", "changed"):
            click.echo(f"{problem.why:<8} {problem.path} (listed in {problem.index} with digest "
                       f"{problem.digest[:12]})")
        else:
            click.echo(f"bad index  {problem.path}: {problem.why}")
    for key, why in sorted(cut.calls.items()):
        click.echo(f"cut off  {s.action_path(key)} (a model answer: {why})")
    for key, calls in sorted(cut.partitions.items()):
        click.echo(f"  kept by  documents partition {key[:12]} ({len(calls)} cut-off documents)")
    if not report.ok or copies or parts or cut.calls:
        if report.corrupt or report.strays or copies or parts or cut.calls:
            click.echo("repair: msmbuild store repair (restores from the remote or an intact copy; "
                       "what has no good copy is dropped and rebuilt by the next build)")
        raise SystemExit(1)
    click.echo("ok")


def _changed_partitions(params):
    """Partition files that are missing or differ from the digest their index records."""
    from msmbuild.generate.partitions import check_partitions
    from msmbuild.layout import Layout

    return check_partitions(Layout.of(params), params.corpora)


@store.command()
@click.pass_context
def repair(ctx: click.Context) -> None:
    """Restore corrupt objects (remote, or an intact copy in build/) and fix the build paths
    that hold them; what cannot be restored is dropped so the next build recomputes only it."""
    from msmbuild.generate.calls import find_cut_off
    from msmbuild.generate.partitions import restore_partitions, unplace_partitions
    from msmbuild.layout import Layout

    params, s = _store(ctx)
    parts, cut = _changed_partitions(params), find_cut_off(s)
    for key in sorted(set(cut.calls) | set(cut.partitions)):
        s.actions.remove(key)
    if cut.calls:
        click.echo(f"dropped {len(cut.calls)} cut-off model answers and the {len(cut.partitions)} documents "
                   "partitions built from them: the next build asks again for those documents only")
        removed = unplace_partitions(Layout.of(params), params.corpora, set(cut.partitions))
        for path in removed:
            click.echo(f"  removed  {path} (built from cut-off answers)")
        parts = [p for p in parts if p.path not in removed]  # for the next build to write, not to restore
    restored, lost = restore_partitions(s, parts)
    for path in restored:
        click.echo(f"  re-placed  {path} (from the store, as its index records it)")
    for path in lost:
        click.echo(f"  not restored  {path}: not in the store; the next `msmbuild generate` of its corpus "
                   "writes it again")
    report = s.repair(params.build_dir)
    if report.strays:
        click.echo(f"quarantined {report.strays} stray files")
    if not report.corrupt:
        click.echo("no corrupt objects")
    else:
        click.echo(f"{len(report.corrupt)} corrupt objects: {len(report.restored)} restored, "
                   f"{len(report.replaced)} build paths re-placed")
    for path in report.replaced:
        click.echo(f"  re-placed  {path}")
    for path in report.links:
        click.echo(f"  removed link  {path} (a symbolic link; its target was left alone)")
    if report.needs_rebuild:
        for path in report.removed:
            if path not in report.links:
                click.echo(f"  removed    {path}")
        click.echo(f"{len(report.corrupt) - len(report.restored)} objects had no good copy: dropped "
                   f"{len(report.dropped_actions)} action records; run `snakemake --cores all` "
                   "(or the stage's msmbuild command) to recompute only those")


@store.command()
@click.option("--root", "extra_roots", multiple=True, help="Extra action key to keep.")
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@click.pass_context
def gc(ctx: click.Context, extra_roots: tuple[str, ...], dry_run: bool) -> None:
    """Delete actions and objects not referenced from build/refs/*.json."""
    from msmbuild.layout import Layout
    from msmbuild.store import read_roots

    params, s = _store(ctx)
    keep = read_roots(params.build_dir) | set(extra_roots)
    if not keep and not extra_roots:
        raise StoreError(f"no roots found under {Layout.of(params).refs_dir}: refusing to empty the store "
                         "(build first, or pass --root)")
    if dry_run:
        unused = [k for k in s.action_keys() if k not in keep]
        click.echo(f"would remove {len(unused)} actions (and the objects only they reach)")
        return
    out = s.gc(keep)
    click.echo(f"removed {out['actions_removed']} actions, {out['objects_removed']} objects "
               f"({out['bytes_freed'] / 1e6:.1f} MB); kept {out['objects_kept']} objects; "
               f"removed {out['resume_removed']} abandoned resume directories, "
               f"{out['tmp_removed']} temp files; quarantined {out['strays_quarantined']} stray files")
    for link in out["links_skipped"]:
        click.echo(f"skipped  {link}: a symbolic link; gc never follows one out of the store "
                   "(remove or replace it by hand)", err=True)


@store.command()
@click.pass_context
def push(ctx: click.Context) -> None:
    """Upload objects and actions the remote lacks."""
    _transfer(ctx, "push", "there")


@store.command()
@click.pass_context
def pull(ctx: click.Context) -> None:
    """Download objects and actions the local store lacks."""
    _transfer(ctx, "pull", "here")


def _transfer(ctx: click.Context, verb: str, where: str) -> None:
    """Push or pull; one line per skipped object or action, then a summary and exit 1."""
    _params, s = _store(ctx)
    n = getattr(s, verb)()
    click.echo(f"{verb}ed {n.objects} objects ({n.bytes / 1e6:.1f} MB), {n.actions} actions; "
               f"{n.skipped} already {where}")
    if n.ok:
        return
    for name, why in sorted(n.failed.items()):
        click.echo(f"skipped  {name}: {why}", err=True)
    click.echo(f"{len(n.failed)} objects/actions could not be {verb}ed (listed above); "
               "everything else was", err=True)
    raise SystemExit(1)
