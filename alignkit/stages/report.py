"""Stage report: report.json from every stage's artifacts, then the HTML report."""

from __future__ import annotations

from alignkit.stages.context import StageContext, StageResult


def run(ctx: StageContext, r: int | None, resume: bool) -> StageResult:  # noqa: ARG001
    from alignkit.evaluate.report import write_report
    from alignkit.evaluate.summary import build_report
    from alignkit.models.device import describe, pick_device
    from alignkit.models.sampling_twin import resolve_compute_dtype

    report = build_report(ctx.run, ctx.cfg)
    report.run.stop_reason = ctx.stop_reason
    device = ctx.policy.device if ctx.has_model("policy") else pick_device(ctx.cfg.model.device)
    report.run.device = describe(device, resolve_compute_dtype(ctx.cfg.model.compute_dtype,
                                                               device))
    report.write(ctx.run.report_json)
    write_report([ctx.run.path], ctx.run.report_html)
    ctx.console.print(f"report: {ctx.run.report_html}")
    return StageResult(record=report)
