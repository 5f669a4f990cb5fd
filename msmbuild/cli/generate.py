"""``msmbuild generate tree|ideas|documents|corpus CORPUS`` and ``msmbuild plan``."""

from __future__ import annotations

import click

from msmbuild.cli import load_ctx_params

_CONCURRENCY_HELP = ("Model-API requests in flight for this process (Snakemake passes its "
                     "`api` resource share here; default: params.yaml).")


@click.group()
def generate() -> None:
    """Spec to documents: tree, ideas, documents (or all three: corpus)."""


def _step(name: str, doc: str):
    @generate.command(name=name, help=doc)
    @click.argument("corpus")
    @click.option("--max-concurrency", type=click.IntRange(min=1), default=None, help=_CONCURRENCY_HELP)
    @click.option("--quiet", is_flag=True, help="No progress bars.")
    @click.pass_context
    def command(ctx: click.Context, corpus: str, max_concurrency: int | None, quiet: bool) -> None:
        from msmbuild.generate import corpus as builder
        from msmbuild.preflight import preflight_before_spending

        params = load_ctx_params(ctx)
        if corpus in params.corpora:
            preflight_before_spending(params, calls_api=params.corpora[corpus].backend == "anthropic")
        fn = {"tree": builder.generate_tree, "ideas": builder.generate_ideas,
              "documents": builder.generate_documents, "corpus": builder.generate_corpus,
              "refresh": builder.generate_corpus}[name]
        reports = fn(params, corpus, max_concurrency=max_concurrency, progress=not quiet,
                     **({"refresh": True} if name == "refresh" else {}))
        for report in reports if isinstance(reports, list) else [reports]:
            click.echo(report.summary())

    return command


_step("tree", "Parse the corpus's spec; write sections.json and the subdomain tree.")
_step("ideas", "Assertions and doc types per subdomain, ideas per doc type.")
_step("documents", "One document per suitable idea and sample, revision, filters.")
_step("corpus", "Run tree, ideas and documents for one corpus.")
_step("refresh", """Regenerate every call made against an older revision of the spec or by an older prompt version.

    Runs tree, ideas and documents; a stored answer whose recorded spec digest differs
    from the spec sent now (context: full_incremental) is made again and replaces it
    under the same key, and an answer that an older prompt version made (kept after an
    upgrade) is made with the current prompts (the corpus setting refresh_stale: true
    does this on every build). `msmbuild plan` prices it first.
    """)


@click.command()
@click.argument("corpora", nargs=-1)
@click.pass_context
def plan(ctx: click.Context, corpora: tuple[str, ...]) -> None:
    """Documents, AFT examples, steps, tokens, $ and GPU-hours, before anything is spent.

    With CORPORA, only those corpora's generation plans; without, every corpus, every
    AFT dataset, each training stage's examples, optimizer steps and warm-up steps, the
    training and eval GPU-hours of every experiment arm (what the store already holds is
    not counted), the agentic-misalignment conditions x samples of each arm with grader
    USD and GPU-hours, a grand total of $ and GPU-hours, and the preflight checks.

    Preflight (docs/preflight.md): each failed check prints one line naming the params key
    to change; an error exits 2 after the plan is printed, a warning (such as a missing
    API key: costs can be planned without one) only prints. A `waivers:` entry turns a
    min_steps, equal_aft_budget or same_questions error into a printed, waived line.
    """
    from msmbuild.config import open_store
    from msmbuild.evaluate.plan import format_agentic_plan, plan_agentic
    from msmbuild.generate.plan import format_plan, plan_corpus

    params = load_ctx_params(ctx)
    names = list(corpora) or sorted(params.corpora)
    plans = [plan_corpus(params, name) for name in names]
    if plans:
        click.echo(format_plan(plans))
    else:
        click.echo("no corpora in params.yaml")
    if corpora:
        return
    from msmbuild.preflight import PreflightError, format_findings, run_preflight
    from msmbuild.train.plan import (
        format_training_plan,
        format_training_stages,
        plan_arms,
        totals,
        training_stages,
    )

    documents = {cp.corpus: next(s.requests for s in cp.stages if s.stage == "document") for cp in plans}
    agentic = plan_agentic(params)
    aft_plans, arms = plan_arms(params, documents, {a.arm: a.gpu_hours for a in agentic}, store=open_store(params))
    click.echo(format_training_plan(params, aft_plans, arms))
    from msmbuild.evaluate.eval_sets import format_eval_sets

    if sets := format_eval_sets(params):
        click.echo(sets)
    stages = training_stages(params, documents)
    if stages:
        click.echo(format_training_stages(stages))
    if agentic:
        click.echo(format_agentic_plan(agentic))
    usd = (sum(cp.cost_usd for cp in plans) + sum(a.cost_usd for a in aft_plans)
           + sum((a.grader_usd or 0.0) + (a.judge_usd or 0.0) for a in agentic))
    no_batch = (sum(cp.cost_usd_no_batch for cp in plans) + sum(a.cost_usd_no_batch or a.cost_usd for a in aft_plans)
                + sum((a.grader_usd or 0.0) + (a.judge_usd or 0.0) for a in agentic))
    train, ev = totals(arms)
    batch = (f" (Message Batches pricing assumed where a stage reaches backends.anthropic.batch.threshold; "
             f"without batches: ${no_batch:.2f})" if no_batch - usd > 0.005 else "")
    click.echo(f"grand total: ${usd:.2f} of API calls{batch}; {train + ev:.3g} GPU-hours "
               f"({train:.3g} training, {ev:.3g} evals; what the store holds not counted)")
    findings = run_preflight(params, mode="plan", documents=documents)
    errors = [f for f in findings if f.is_error]
    shown = format_findings([f for f in findings if not f.is_error])
    if shown or not errors:
        click.echo(shown or "preflight: all checks passed")
    if errors:
        raise PreflightError(format_findings(errors))
