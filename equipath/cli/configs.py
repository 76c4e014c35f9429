"""``equipath configs``: the configs shipped in the package, with the paper row each reproduces.

Use one by name (``equipath train --config pcam_p4m_densenet``), or ``--show NAME`` to print it, e.g. to
copy it and edit: ``equipath configs --show pcam_p4m_densenet_cpu > my.yaml``.
"""

import textwrap

from equipath.configs import list_configs, resolve_config_path


def register(subparsers) -> None:
    p = subparsers.add_parser("configs", help="list the shipped configs (paper rows and their CPU-sized siblings)",
                              description=__doc__)
    p.add_argument("--show", metavar="NAME", help="print the YAML of one config")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.show:
        print(resolve_config_path(args.show).read_text(), end="")
        return 0
    configs = list_configs()
    width = max(len(c.name) for c in configs)
    for c in configs:
        first = f"{c.name:<{width}}  equipath {c.command} --config {c.name}"
        print(first)
        print(textwrap.fill(c.first_sentence, 100, initial_indent=" " * 4, subsequent_indent=" " * 4))
    print(f"\n{len(configs)} configs in {configs[0].path.parent}; *_cpu configs run in minutes on a CPU "
          f"(SYNTHETIC data unless data.dataset / data.root say otherwise)")
    return 0
