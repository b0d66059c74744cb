"""Run deploy/argocd/health.lua the way Argo CD does, for the tests in this folder."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import lupa.lua51 as lua51

SCRIPT = (Path(__file__).resolve().parents[2] / "deploy" / "argocd" / "health.lua").read_text()


def health(obj: dict[str, Any]) -> tuple[str, str]:
    """(status, message) that the script returns for `obj`, in a fresh Lua 5.1 state without
    the libraries Argo CD's sandbox leaves out (io, os, package loading)."""
    runtime = lua51.LuaRuntime(register_eval=False, register_builtins=False)
    assert runtime.eval("_VERSION") == "Lua 5.1"
    lua_globals = runtime.globals()
    for unsafe in ("io", "os", "require", "dofile", "loadfile", "load", "loadstring", "package"):
        lua_globals[unsafe] = None
    lua_globals.obj = runtime.table_from(copy.deepcopy(obj), recursive=True)
    result = runtime.execute(SCRIPT)
    return str(result["status"]), str(result["message"])
