"""``segrec serve``: the HTTP API over a saved run (extra ``serve``)."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path

from ._args import positive_float, positive_int

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``segrec serve``."""
    p = sub.add_parser("serve", help="serve recommendations over HTTP from a saved run",
                       description="Start the HTTP API (OpenAPI docs at /docs) over the --out directory of "
                                   "`segrec run`. Binds 127.0.0.1 unless told otherwise; another address "
                                   "needs --api-key-env (or --insecure). SIGHUP swaps in a fresh copy of the "
                                   "artifact without dropping requests; with an API key (or --allow-reload) "
                                   "POST /v1/admin/reload loads another run from inside --reload-root.")
    p.add_argument("artifacts", help="directory written by `segrec run --out`")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: %(default)s)")
    p.add_argument("--port", type=_port, default=8000, help="TCP port, 0-65535 (default: %(default)s)")
    p.add_argument("--api-key-env", metavar="VAR",
                   help="require the API key held in environment variable VAR (header X-API-Key)")
    p.add_argument("--system", help="saved system to serve (default: the run's best on inner validation)")
    p.add_argument("--policy", choices=("accuracy", "budget", "rules"),
                   help="re-route the segmented system by this policy (no refit)")
    p.add_argument("--budget-fraction", type=float,
                   help="budget policy: mean FLOPs/request as a share of the most accurate tier's")
    p.add_argument("--budget-flops", type=float, help="budget policy: mean FLOPs/request, absolute")
    p.add_argument("--rules", metavar="KEY=TIER,...",
                   help="rules policy (implies --policy rules): activity level (light, medium, heavy), "
                        "segment number or 'new' -> tier, e.g. 'heavy=global,light=local,new=local,3=global'")
    p.add_argument("--max-k", type=positive_int, default=1000,
                   help="largest k a request may ask for (default: %(default)s)")
    p.add_argument("--insecure", action="store_true",
                   help="allow binding a non-loopback --host without --api-key-env (anyone who can reach "
                        "the port can query the server)")
    p.add_argument("--allow-reload", action="store_true",
                   help="expose POST /v1/admin/reload without an API key (it is on by default only with one)")
    p.add_argument("--no-reload", action="store_true", help="disable POST /v1/admin/reload even with a key")
    p.add_argument("--reload-root", metavar="DIR",
                   help="directory a reload path must lie in (default: the folder holding ARTIFACTS)")
    p.add_argument("--header-timeout", type=positive_float, default=10.0,
                   help="seconds a client may take to send its request headers (default: %(default)s)")
    p.add_argument("--body-timeout", type=positive_float, default=30.0,
                   help="seconds a client may take to send a request body (default: %(default)s)")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="torch CPU threads for neural tiers (default: %(default)s; one request is small, and "
                        "on a busy 2-core box two threads made a Transformer request 50x slower)")
    p.add_argument("--ann", choices=("auto", "exact", "on"), default="auto",
                   help="top-k for known users of cached tiers: an approximate (FAISS IVF) index for "
                        "catalogues of --ann-min-items or more (auto; needs segrec[ann]), always exact, "
                        "or always the index (default: %(default)s)")
    p.add_argument("--ann-min-items", type=positive_int, default=None,
                   help="catalogue size from which --ann auto builds an index (default: 50000)")
    p.add_argument("--log-level", default="warning",
                   choices=("critical", "error", "warning", "info", "debug"),
                   help="uvicorn log level (default: %(default)s)")
    p.add_argument("--access-log", action="store_true", help="log every request (slower)")
    p.set_defaults(func=serve_command)


def router_options(args: argparse.Namespace) -> dict:
    """Router options from the flags (system and routing policy)."""
    opts: dict = {"ann": getattr(args, "ann", "auto")}
    if getattr(args, "ann_min_items", None) is not None:
        opts["ann_min_items"] = args.ann_min_items
    if args.system:
        opts["system"] = args.system
    if args.policy:
        opts["policy"] = args.policy
    if args.budget_fraction is not None:
        opts["budget_fraction"] = args.budget_fraction
    if args.budget_flops is not None:
        opts["budget_flops"] = args.budget_flops
    if args.rules:
        opts["rules"] = parse_rules(args.rules)
        opts.setdefault("policy", "rules")
    return opts


def parse_rules(text: str) -> dict:
    """``heavy=global,light=local,new=local,3=global`` -> a RulesConfig mapping.

    Raises:
        SegrecError: A pair is not ``KEY=TIER`` or a key is not an activity level, a segment or ``new``.
    """
    from ..errors import SegrecError

    activity: dict[str, str] = {}
    segments: dict[int, str] = {}
    rules: dict = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        key, sep, tier = pair.partition("=")
        key, tier = key.strip(), tier.strip()
        if not sep or not tier:
            raise SegrecError(f"--rules: {pair!r} is not KEY=TIER (e.g. heavy=global)")
        if key in ("light", "medium", "heavy"):
            activity[key] = tier
        elif key == "new":
            rules["new_users"] = tier
        elif key.isdigit():
            segments[int(key)] = tier
        else:
            raise SegrecError(f"--rules: unknown key {key!r}; use light, medium, heavy, new or a "
                              "segment number")
    if activity:
        rules["activity"] = activity
    if segments:
        rules["segments"] = segments
    return rules


def serve_command(args: argparse.Namespace) -> int:
    """Load the run, build the app and run uvicorn until interrupted."""
    from ..errors import SegrecError, require
    from ..serve import create_app
    from ..serve.http import deadline_protocol

    uvicorn = require("uvicorn", "serve")
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise SegrecError(f"--api-key-env {args.api_key_env}: the environment variable is not set "
                              "or empty; export it first (export VAR=secret)")
    if not _is_loopback(args.host) and api_key is None:
        if not args.insecure:
            raise SegrecError(f"--host {args.host}: refusing to serve a non-loopback address without an API "
                              "key; pass --api-key-env VAR (recommended) or --insecure")
        print(f"segrec: warning: binding {args.host} without --api-key-env (--insecure): anyone who can "
              "reach this port can query the server", file=sys.stderr)
    if args.reload_root is not None and not Path(args.reload_root).is_dir():
        raise SegrecError(f"--reload-root {args.reload_root}: not a directory")
    if args.budget_fraction is not None and not 0 < args.budget_fraction <= 1:
        raise SegrecError(f"--budget-fraction must be in (0, 1]; got {args.budget_fraction}")
    if args.budget_flops is not None and not args.budget_flops > 0:
        raise SegrecError(f"--budget-flops must be > 0; got {args.budget_flops}")
    allow_reload = not args.no_reload and (api_key is not None or args.allow_reload)
    if args.threads:
        import torch
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)  # the process's setting: the CLI owns it, not the library
        # BLAS too: a request's item-table product is one gemv, and on a busy box a second
        # OpenBLAS thread made a 100k-item product 2.5x slower (benchmarks/bench_ann.py)
        threadpool_limits(args.threads)
    app = create_app(args.artifacts, api_key=api_key, max_k=args.max_k, allow_reload=allow_reload,
                     reload_root=args.reload_root, reload_on_sighup=True, body_timeout=args.body_timeout,
                     **router_options(args))
    print(f"segrec: serving {args.artifacts} on http://{args.host}:{args.port} (docs at /docs)",
          file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=args.access_log,
                http=deadline_protocol(args.header_timeout), timeout_keep_alive=5)
    return 0


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 65535; got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 65535; got {text!r}")
    return port


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
