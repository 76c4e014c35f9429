"""``equipath models``: the registered models with their group, task, parameter count and input sizes."""

from equipath.cli._options import add_model
from equipath.models import create_model, list_models


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "models", help="list the registered models",
        description="List every registered model at its default (paper) configuration: group, task, "
                    "number of parameters, and the input heights / widths at which it is exactly equivariant.")
    add_model(parser, help="list only this model (repeatable; default: every registered model)")
    parser.set_defaults(func=run)


def run(args) -> int:
    header = ("name", "group", "task", "parameters", "input sides (H and W each)")
    rows = []
    unknown = [name for name in args.model or () if name not in list_models()]
    if unknown:
        raise ValueError(f"--model {unknown[0]}: unknown model; expected one of {', '.join(list_models())}")
    for name in args.model or list_models():
        model = create_model(name)
        n = sum(p.numel() for p in model.parameters())
        rows.append((name, model.group.name, model.task, f"{n:,}", str(model.size_rule)))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = (cell.rjust(w) if i == 3 else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        print("  ".join(cells).rstrip())
    return 0
