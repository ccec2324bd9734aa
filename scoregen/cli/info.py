"""``scoregen info``: what a checkpoint or builtin holds."""

from __future__ import annotations

import json

import click

from scoregen.cli._common import CONTEXT, fmt, load


def _values(values) -> str:
    shown = ", ".join(f"{v:.4g}" for v in values[:4])
    return f"[{shown}{', ...' if len(values) > 4 else ''}]"


@click.command(
    context_settings=CONTEXT,
    epilog="\b\nExamples:\n  scoregen info builtin:ncsn2d-dae\n  scoregen info run/checkpoint.safetensors --json",
)
@click.argument("ckpt", metavar="CKPT")
@click.option("--json", "as_json", is_flag=True, help="Print the whole JSON record instead.")
def info(ckpt: str, as_json: bool) -> None:
    """What a checkpoint (or builtin:NAME) holds: model, parameters, data, σ, training."""
    from scoregen.models import count_parameters

    model = load(ckpt, "cpu", option="CKPT")
    record = model.metadata
    if as_json:
        click.echo(json.dumps(record, indent=2))
        return
    lines = [f"{model.name}" + (f": {model.description}" if model.description else "")]
    if model.path is not None:
        lines.append(f"  file        {model.path} ({model.path.stat().st_size / 1024:.0f} KB)")
    spec = record.get("model", {})
    if model.exact:
        mixture = model.oracle
        lines.append(
            f"  model       exact Gaussian mixture, {mixture.n_components} components in "
            f"d={mixture.dim} (weights {', '.join(f'{w:.3g}' for w in mixture.weights.tolist()[:8])}"
            f"{' ...' if mixture.n_components > 8 else ''})"
        )
    else:
        n_params = count_parameters(model.denoiser)
        net = spec.get("net", {})
        config = ", ".join(f"{k}={v}" for k, v in net.items() if k != "shape")
        lines.append(f"  model       {spec.get('family')} ({config})")
        lines.append(f"  parameters  {n_params:,}")
        lines.append(
            f"  precond     {spec.get('precond')}, σ_data={fmt(spec.get('sigma_data', float('nan')))}"
        )
    data = model.data
    norm = data.get("normalization") or {}
    lines.append(
        f"  data        {data.get('name')} ({data.get('kind', '?')}), example shape "
        f"{data.get('shape')}, data = x·{fmt(norm.get('scale', 1.0))} + "
        f"{fmt(norm.get('shift', 0.0))}"
        + (f", values in {data['value_range']}" if data.get("value_range") else "")
    )
    stats = data.get("stats")
    if stats is not None:
        lines.append(
            f"  data stats  mean {_values(stats['mean'])}, std {_values(stats['std'])} (model "
            f"space{', with the covariance' if stats.get('cov') else ''}: where samplers start)"
        )
    if model.fixed_sigma is not None:
        lines.append(f"  σ           fixed at {fmt(model.fixed_sigma)} (sample with langevin)")
    else:
        low, high = model.sigma_range
        kind = "exact at every σ; default ladder" if model.exact else "trained on"
        dist = model.sigma.get("distribution")
        lines.append(
            f"  σ           {kind} [{fmt(low)}, {fmt(high)}]" + (f" ({dist})" if dist else "")
        )
    training = record.get("training") or {}
    if training:
        loss = training.get("final_loss")
        world = training.get("world_size", 1)  # data-parallel processes
        where = training.get("device")
        if world > 1:
            where = f"{world} processes ({where} on rank 0)"
        lines.append(
            f"  training    {training.get('steps')} steps, objective {training.get('objective')}, "
            f"seed {training.get('seed')}, final loss {fmt(loss) if loss is not None else '?'}, "
            f"{training.get('wall_time_s', 0):.0f} s on {where}"
        )
        config = training.get("config") or {}
        if config:
            batch = config.get("batch_size")
            if world > 1:
                batch = f"{batch} per process × {world} = {training.get('global_batch_size')}"
            lines.append(
                f"  config      batch {batch}, lr {config.get('lr')}, "
                f"noise {config.get('noise')}, weighting {config.get('weighting')}, "
                f"EMA {config.get('ema_decay')}"
            )
    if record.get("scoregen_version"):
        lines.append(f"  written by  scoregen {record['scoregen_version']}")
    click.echo("\n".join(lines))
