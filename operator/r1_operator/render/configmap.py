"""The ConfigMap holding the runtime settings file: settings that are not CLI flags."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from r1_operator.api import DeepSeekDeployment
from r1_operator.render.common import CONFIG, CONFIG_MAP_SUFFIX, SETTINGS_FILE, Manifest, metadata


def runtime_settings(dsd: DeepSeekDeployment) -> dict[str, Any]:
    """The content of `settings.json` (read by `r1-runtime serve --settings`)."""
    spec = dsd.spec
    return {
        "servedModelName": spec.model.name,
        "quantization": spec.model.quantization,
        "security": security_settings(dsd),
    }


def security_settings(dsd: DeepSeekDeployment) -> dict[str, Any]:
    """`spec.security` less the NetworkPolicy, camelCase, every key present (defaults filled
    in), builtins sorted: the runtime reads exactly this shape (docs/runtime-flags.md)."""
    security = dsd.spec.security
    settings: dict[str, Any] = security.model_dump(
        mode="json", by_alias=True, include={"input_filter", "output_redaction", "audit"}
    )
    settings["outputRedaction"]["builtins"] = sorted(set(security.output_redaction.builtins))
    return settings


def config_data(dsd: DeepSeekDeployment) -> dict[str, str]:
    """The ConfigMap's `data`: one file, serialised canonically (sorted keys)."""
    text = json.dumps(runtime_settings(dsd), indent=2, sort_keys=True) + "\n"
    return {SETTINGS_FILE: text}


def config_hash(dsd: DeepSeekDeployment) -> str:
    """sha256 of the ConfigMap data; on the pod template so a settings change rolls pods."""
    canonical = json.dumps(config_data(dsd), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def build_configmap(dsd: DeepSeekDeployment) -> Manifest:
    """ConfigMap `<name>-runtime` with `settings.json`."""
    meta = metadata(dsd, CONFIG, CONFIG_MAP_SUFFIX)
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": config_data(dsd)}
