"""``agentflow data path``: where the shipped seeds, benchmarks and configs are."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="the data shipped with AgentFlow (seeds, benchmarks, configs)")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    dsub.required = True
    s = dsub.add_parser("path", help="print the folder holding seeds/, benchmark/ and configs/",
                        description="Print the folder holding the shipped seeds/, benchmark/ and configs/ (inside "
                                    "the installed package, or the source checkout). Relative paths in configs "
                                    "resolve against the current folder when it has seeds/ or configs/, else "
                                    "against this one.")
    s.add_argument("what", nargs="?", choices=["seeds", "benchmark", "configs"],
                   help="print the path of this subfolder instead")
    s.set_defaults(func=_path)


def _path(args: argparse.Namespace) -> int:
    from ..config import data_path

    root = data_path()
    print(root / args.what if args.what else root)
    return 0
