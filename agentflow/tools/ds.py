"""``ds:*``: data analysis over a folder of CSV files.

``seed_path`` names a folder of CSV files (or one CSV file) inside the configured roots;
relative paths resolve against the project folder first (``seeds/ds/bookshop``), then
each root.

- ``inspect_data`` and ``read_csv`` only read files, with the standard ``csv`` module in
  the server (no session, no pandas in the server process). Column types are inferred
  the way ``pandas.read_csv`` does for plain files: ``int64``, ``float64`` (numbers with
  gaps too), ``bool`` and ``object`` (``str`` from pandas 3 on).
- ``run_python`` runs code in the session's own IPython kernel (:mod:`.code`) with
  ``pandas as pd`` and ``numpy as np`` imported. Its working directory is a copy of the
  data folder inside the session workspace, so code may write files next to the data
  without changing the shipped seeds (folders over ``copy_limit_mb`` are used in place).
  ``return_vars`` names variables to show after the code ran (``variables``, and
  appended to ``result``).

``enable_llm_summary`` (AgentFlow's option) adds a model ``summary`` of an inspection, and
of a ``run_python`` result longer than ``ds_summary_max_chars``, when ``summary_model``
and ``openai_api_key`` are configured; without them the answer carries a ``note`` saying
that no summary was made.
"""
from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import io
import json
import math
import os
from pathlib import Path

from ..isolation import SupervisorError
from ..isolation.safefs import UnsafePath, open_within

from .base import BackendConfigError, ParamError, SessionInfo, ToolContext, ToolError, resolve_path, tool
from .code import KernelBackend

_SEED_PATH = {"type": "string", "minLength": 1,
              "description": "Folder of CSV files (or one CSV file) to analyse, e.g. 'seeds/ds/bookshop'."}
_BOOL = {"true": True, "false": False}
_STARTUP = """\
import pandas as pd
import numpy as np
pd.set_option("display.max_rows", 60)
pd.set_option("display.max_columns", 30)
pd.set_option("display.width", 160)
"""

def _pandas_major() -> int:
    try:
        return int(importlib.metadata.version("pandas").split(".")[0])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return 2


# pandas 3 reads text columns as the "str" dtype, earlier versions as "object"
_STR_DTYPE = "str" if _pandas_major() >= 3 else "object"
_LLM_KEYS = {"enable_llm_summary", "summary_model", "openai_api_key", "openai_api_url",
             "llm_summary_temperature", "llm_summary_max_tokens"}
_VAR_NAME = {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$", "maxLength": 100}
_MAX_VAR_CHARS = 4000
_SUMMARY_MAX_CHARS = 12000
# Prints the named variables of the session kernel as one JSON line (names are
# identifiers, checked by the tool's schema, and passed as a list literal).
_INSPECT = '''\
def _af_show(names, limit):
    import json
    shown, missing = {}, []
    space = globals()
    for name in names:
        if name not in space:
            missing.append(name)
            continue
        value = space[name]
        try:
            if hasattr(value, "head") and hasattr(value, "shape"):
                text = f"{name} ({type(value).__name__}, shape={value.shape}):\\n{value.head(5).to_string()}"
            else:
                text = f"{name} = {value!r}"
        except Exception as err:
            text = f"{name}: cannot be shown ({type(err).__name__}: {err})"
        shown[name] = text if len(text) <= limit else text[:limit] + " ..."
    print(json.dumps({"variables": shown, "missing": missing}))
_af_show(%r, %d)
del _af_show
'''


class DsBackend(KernelBackend):
    name = "ds"
    description = "Data analysis over folders of CSV files, with pandas in a session kernel"
    config_keys = KernelBackend.config_keys | {"ds_max_csv", "ds_summary_max_chars", "content_limit", "head_rows",
                                               "max_rows", "copy_data", "copy_limit_mb"} | _LLM_KEYS
    startup_code = _STARTUP

    def check_config(self) -> None:
        super().check_config()
        cfg = self.config
        try:
            self.max_csv = int(cfg.get("ds_max_csv", 100))
            self.head_rows = int(cfg.get("head_rows", 5))
            self.max_rows = int(cfg.get("max_rows", 1000))
            self.content_limit = int(cfg.get("content_limit", cfg.get("ds_summary_max_chars", 0)) or 0)
            self.copy_data = bool(cfg.get("copy_data", True))
            self.copy_limit = int(cfg.get("copy_limit_mb", 256)) << 20
            self.summary_max_chars = int(cfg.get("ds_summary_max_chars") or _SUMMARY_MAX_CHARS)
            self.summary_temperature = float(cfg.get("llm_summary_temperature", 0.3))
            self.summary_max_tokens = int(cfg.get("llm_summary_max_tokens", 2000))
        except (TypeError, ValueError) as err:
            raise BackendConfigError(f"resource 'ds': {err}") from None
        from ..config import ConfigError, as_bool

        try:
            self.llm_summary = as_bool(cfg.get("enable_llm_summary", False), "resource 'ds': enable_llm_summary")
        except ConfigError as err:
            raise BackendConfigError(str(err)) from None
        self.summary_model = str(cfg.get("summary_model") or "")
        self.summary_key = str(cfg.get("openai_api_key") or "")
        self.summary_url = str(cfg.get("openai_api_url") or "") or None

    @property
    def model_configured(self) -> bool:
        """Whether ``enable_llm_summary`` can summarise: a model name and an API key."""
        return bool(self.summary_model and self.summary_key)

    def _summarise(self, ctx: ToolContext, text: str, goal: str) -> dict:
        """``{summary, summary_model}`` from the configured model, or the reason there is
        none (``note``, or ``summary_error`` when the model call failed)."""
        if not self.model_configured:
            missing = " and ".join(k for k, v in (("summary_model", self.summary_model),
                                                  ("openai_api_key", self.summary_key)) if not v)
            return {"note": f"enable_llm_summary is on but no summary model is configured for ds (set {missing} "
                            "in the server config): no summary was made; the full output is returned"}
        import openai

        if self.content_limit:
            text = text[: self.content_limit]
        client = openai.OpenAI(api_key=self.summary_key, base_url=self.summary_url,
                               timeout=max(1.0, ctx.remaining), max_retries=1)
        prompt = (f"Task: {goal}\nKeep every number, identifier and computed result exactly as written, add "
                  f"nothing that is not in the output, and answer with the summary only.\n\nOutput:\n{text}")
        try:
            reply = client.chat.completions.create(
                model=self.summary_model, messages=[{"role": "user", "content": prompt}],
                temperature=self.summary_temperature, max_tokens=self.summary_max_tokens)
            content = reply.choices[0].message.content if reply.choices else None
        except openai.OpenAIError as err:
            return {"summary": None, "summary_error": f"summary model {self.summary_model}: "
                                                      f"{type(err).__name__}: {err}"}
        if not content:
            return {"summary": None, "summary_error": f"summary model {self.summary_model} gave an empty answer"}
        return {"summary": content.strip(), "summary_model": self.summary_model}

    def _cap(self, ctx: ToolContext) -> int:
        return min(ctx.max_output_bytes, self.content_limit) if self.content_limit else ctx.max_output_bytes

    # -- paths -------------------------------------------------------------------
    def _seed(self, seed_path: str) -> Path:
        return resolve_path(seed_path, self.context.roots, "seed_path", base=Path(self.context.project_dir))

    @staticmethod
    def _folder(seed: Path) -> Path:
        return seed if seed.is_dir() else seed.parent

    def _csv_files(self, seed: Path) -> list[Path]:
        if seed.is_file():
            return [seed]
        return sorted(p for p in seed.rglob("*") if p.suffix.lower() in (".csv", ".tsv") and p.is_file())

    # -- tools -------------------------------------------------------------------
    @tool(
        "inspect_data",
        "List the CSV files of a data folder with, for each file, its number of rows and columns, "
        "column names, column types (as pandas would infer them) and its first rows. Start here.",
        {"properties": {"seed_path": _SEED_PATH}, "required": ["seed_path"]},
        default_timeout=60,
        max_timeout=600,
        needs_session=False,
    )
    def inspect_data(self, ctx: ToolContext, seed_path: str) -> dict:
        seed = self._seed(seed_path)
        files = self._csv_files(seed)
        folder = self._folder(seed)
        budget = self._cap(ctx)
        out = []
        for path in files[: self.max_csv]:
            info = _scan(path, self.head_rows, [folder])
            info = {"file": str(path.relative_to(folder)), **info}
            budget -= len(str(info))
            if budget < 0 and out:
                break
            out.append(info)
        if not files:
            raise ToolError(f"no CSV files in '{seed_path}'", {"seed_path": seed_path, "files": []})
        result = {"seed_path": seed_path, "files": out, "total_files": len(files),
                  "truncated": len(out) < len(files)}
        if self.llm_summary:
            result.update(self._summarise(ctx, json.dumps(out, ensure_ascii=False, default=str),
                                          "Summarise this inspection of a folder of CSV files: the files, their "
                                          "columns and types, and anything notable in the first rows."))
        return result

    @tool(
        "read_csv",
        "Read rows of one CSV file of a data folder. Returns the column names, column types and the "
        "first max_rows rows (values typed: numbers, booleans, null for empty cells), with the "
        "file's total row count.",
        {
            "properties": {
                "seed_path": _SEED_PATH,
                "csv_file": {"type": "string", "minLength": 1,
                             "description": "CSV file name, relative to seed_path (e.g. 'sales.csv')."},
                "max_rows": {"type": "integer", "minimum": 1,
                             "description": "How many rows to return (default 50)."},
            },
            "required": ["seed_path", "csv_file"],
        },
        default_timeout=60,
        max_timeout=600,
        needs_session=False,
    )
    def read_csv(self, ctx: ToolContext, seed_path: str, csv_file: str, max_rows: int = 50) -> dict:
        folder = self._folder(self._seed(seed_path))
        path = resolve_path(csv_file, [folder], "csv_file", base=folder)
        if not path.is_file():
            raise ParamError("csv_file", f"'{csv_file}' is not a file")
        if max_rows > self.max_rows:
            raise ParamError("max_rows", f"at most {self.max_rows} rows per call; use ds:run_python for more")
        info = _scan(path, max_rows, [folder])
        rows, budget, cut = [], self._cap(ctx), False
        for row in info.pop("head"):
            budget -= len(str(row))
            if budget < 0:
                cut = True
                break
            rows.append(row)
        return {"file": str(path.relative_to(folder)), "columns": info["column_names"], "dtypes": info["dtypes"],
                "rows": rows, "total_rows": info["rows"], "returned_rows": len(rows),
                "truncated": len(rows) < info["rows"], "output_capped": cut}

    @tool(
        "run_python",
        "Run Python code for data analysis in your session's persistent IPython kernel. pandas (pd) "
        "and numpy (np) are imported; the working directory is the data folder, so "
        "pd.read_csv('sales.csv') works. Variables persist between calls. Returns stdout, stderr, "
        "'result' (the value of the last expression, else what the code printed), the traceback on "
        "error and matplotlib figures as base64 PNG. Print or end with the values you need; "
        "'return_vars' shows named variables after the run.",
        {
            "properties": {
                "seed_path": _SEED_PATH,
                "code": {"type": "string", "minLength": 1, "description": "Python source to run."},
                "return_vars": {"type": "array", "items": _VAR_NAME, "maxItems": 20,
                                "description": "Names of variables to show after the code ran (a DataFrame "
                                               "shows its shape and first rows)."},
                "timeout": {"type": "number", "exclusiveMinimum": 0,
                            "description": "Seconds before the code is interrupted (default 120)."},
            },
            "required": ["seed_path", "code"],
        },
        default_timeout=120,
        max_timeout=3600,
    )
    def run_python(self, ctx: ToolContext, seed_path: str, code: str, return_vars: list[str] | None = None) -> dict:
        folder = self._folder(self._seed(seed_path))
        workdir = self._workdir(ctx.session, folder)
        setup = f"import os as _af_os; _af_os.chdir({str(workdir)!r}); del _af_os"
        data = self.run_code(ctx, code, setup=setup)
        data["working_dir"] = seed_path if workdir == folder else f"session copy of {seed_path}"
        if return_vars:
            data.update(self._show_vars(ctx, list(dict.fromkeys(return_vars))))
            shown = "\n".join([*data["variables"].values(),
                               *([f"not defined: {', '.join(data['missing_variables'])}"]
                                 if data.get("missing_variables") else [])])
            if shown:
                data["result"] = f"{data['result'].rstrip()}\n\n{shown}" if data["result"].strip() else shown
        if self.llm_summary and len(data["result"]) > self.summary_max_chars:
            data.update(self._summarise(ctx, data["result"], "Summarise this output of a Python data analysis, "
                                                              "keeping the computed numbers and conclusions."))
        return data

    def _show_vars(self, ctx: ToolContext, names: list[str]) -> dict:
        """``variables`` (name → text) and ``missing_variables`` of the session kernel."""
        try:
            shown = self.run_code(ctx, _INSPECT % (names, _MAX_VAR_CHARS))
            found = json.loads(shown["stdout"].strip().splitlines()[-1])
        except (ToolError, ValueError, IndexError) as err:
            reason = err.message if isinstance(err, ToolError) else "unreadable answer"
            return {"variables": {}, "variables_error": f"the variables could not be shown: {reason}"}
        out = {"variables": found["variables"]}
        if found["missing"]:
            out["missing_variables"] = found["missing"]
        return out

    def _workdir(self, session: SessionInfo, folder: Path) -> Path:
        """A private copy of the data folder in the workspace (made once per session, by
        the session's supervisor, as the session: the server writes nothing there)."""
        if not self.copy_data:
            return folder
        tag = hashlib.sha1(str(folder).encode()).hexdigest()[:10]
        target = Path(session.workspace) / "data" / f"{folder.name}-{tag}"
        supervisor = self.confine.attach(session, max_reply_bytes=65536)
        try:
            reply = supervisor.request("copy_tree", 120, src=str(folder), dst=str(target),
                                       limit_bytes=self.copy_limit)
        except SupervisorError as err:
            raise ToolError(f"could not copy the data folder into the session: {err}") from None
        return Path(reply["path"]) if reply.get("copied") else folder


def _scan(path: Path, head_rows: int, roots: list[Path]) -> dict:
    """Shape, column names, pandas-like dtypes and the first rows of one CSV file (a
    regular file inside ``roots``, checked on the opened descriptor)."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        raw = open_within(path, roots)
    except (UnsafePath, OSError) as err:
        raise ToolError(f"cannot read '{path.name}': {err}") from None
    size = os.fstat(raw.fileno()).st_size
    with io.TextIOWrapper(raw, newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            return {"rows": 0, "columns": 0, "column_names": [], "dtypes": {}, "head": [],
                    "size_bytes": size}
        kinds = [_Kind() for _ in header]
        head, count = [], 0
        for row in reader:
            if not row:
                continue
            count += 1
            for kind, value in zip(kinds, row):
                kind.add(value)
            if len(head) < head_rows:
                head.append(row)
    dtypes = [k.dtype for k in kinds]
    typed = [[_convert(v, dtypes[i] if i < len(dtypes) else _STR_DTYPE) for i, v in enumerate(row)] for row in head]
    return {"rows": count, "columns": len(header), "column_names": header,
            "dtypes": dict(zip(header, dtypes)), "head": typed, "size_bytes": size}


class _Kind:
    """Narrowest pandas dtype that fits every value seen so far."""

    __slots__ = ("can_int", "can_float", "can_bool", "missing", "seen")

    def __init__(self):
        self.can_int = self.can_float = self.can_bool = True
        self.missing = False
        self.seen = False

    def add(self, value: str) -> None:
        value = value.strip()
        if value == "" or value in ("NA", "NaN", "nan", "N/A", "NULL", "null", "None", "#N/A"):
            self.missing = True
            return
        self.seen = True
        if self.can_bool and value.lower() not in _BOOL:
            self.can_bool = False
        if self.can_int:
            try:
                int(value)
                return
            except ValueError:
                self.can_int = False
        if self.can_float:
            try:
                float(value)
            except ValueError:
                self.can_float = False

    @property
    def dtype(self) -> str:
        if not self.seen:
            return "float64"  # an all-empty column reads as NaN
        if self.can_bool:
            return "object" if self.missing else "bool"
        if self.can_int:
            return "float64" if self.missing else "int64"
        return "float64" if self.can_float else _STR_DTYPE


def _convert(value: str, dtype: str):
    stripped = value.strip()
    if dtype not in ("object", "str") and stripped in ("", "NA", "NaN", "nan", "N/A", "NULL", "null", "None", "#N/A"):
        return None
    if dtype in ("object", "str") and stripped == "":
        return None
    try:
        if dtype == "int64":
            return int(stripped)
        if dtype == "float64":
            number = float(stripped)
            return None if math.isnan(number) else (int(number) if number.is_integer() and "." not in stripped
                                                    and "e" not in stripped.lower() else number)
        if dtype == "bool":
            return _BOOL[stripped.lower()]
    except (ValueError, KeyError):
        pass
    return value
