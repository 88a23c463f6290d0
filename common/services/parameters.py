"""Job parameters: the declarations a job carries, the values an execution binds to them, and the
environment its actions see them in (OC_PARAM_<NAME>, never spliced into command text).

Non-secret values are stored as given in `executions.parameters`; secret ones are stored only as one
Fernet token (`executions.secret_parameters`) and appear in `executions.parameters` as MASK, so the read
shape says they were given without saying what they were. The worker overlays the decrypted values."""
from __future__ import annotations

import json
import re
from typing import Any

from common.crypto import SecretBox
from common.errors import ValidationFailed

NAME_PATTERN = r"^[A-Z][A-Z0-9_]{0,63}$"
MAX_VALUE_CHARS = 4096
ENV_PREFIX = "OC_PARAM_"
MASK = "****"
_NAME = re.compile(NAME_PATTERN)


def check_declarations(declarations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The job's declarations as stored, or ValidationFailed naming `parameters.<i>.<key>`: names unique,
    patterns that compile, defaults that match them, no default on a secret (it would be shown back)."""
    seen: set[str] = set()
    stored = []
    for i, decl in enumerate(declarations):
        name = decl["name"]
        where = f"parameters.{i}"
        if name in seen:
            raise ValidationFailed(f"Parameter {name} is declared twice", {"field": f"{where}.name", "received": name})
        seen.add(name)
        pattern = decl.get("pattern")
        if pattern is not None:
            try:
                compiled = re.compile(pattern)
            except (re.error, RecursionError, OverflowError) as exc:
                raise ValidationFailed(f"Parameter {name}: pattern is not a valid regular expression: {exc}",
                                       {"field": f"{where}.pattern"}) from exc
        default = decl.get("default")
        if default is not None:
            if decl.get("secret"):
                raise ValidationFailed(f"Parameter {name} is secret: it may not have a default (it would be shown "
                                       "back); supply it at execute time", {"field": f"{where}.default"})
            if pattern is not None and compiled.fullmatch(default) is None:
                raise ValidationFailed(f"Parameter {name}: the default does not match its pattern",
                                       {"field": f"{where}.default", "pattern": pattern, "received": default})
        stored.append({"name": name, "required": bool(decl.get("required")), "default": default,
                       "secret": bool(decl.get("secret")), "pattern": pattern,
                       "description": decl.get("description")})
    return stored


def bind(declarations: list[dict[str, Any]], supplied: dict[str, str] | None) -> tuple[dict[str, str], dict[str, str]]:
    """The values an execution runs with, (public, secret), from what execute supplied and the defaults.
    Errors name `parameters.<NAME>` and never echo a value (it may be a secret)."""
    supplied = supplied or {}
    declared = {d["name"]: d for d in declarations}
    for name in sorted(supplied):
        if name not in declared:
            raise ValidationFailed(f"Unknown parameter {name}: the job declares "
                                   f"{', '.join(sorted(declared)) or 'no parameters'}",
                                   {"field": f"parameters.{name}", "declared": sorted(declared)})
    public: dict[str, str] = {}
    secret: dict[str, str] = {}
    for name, decl in declared.items():
        field = f"parameters.{name}"
        value = supplied.get(name, decl.get("default"))
        if value is None:
            if decl.get("required"):
                raise ValidationFailed(f"Parameter {name} is required", {"field": field})
            continue
        if not isinstance(value, str):
            raise ValidationFailed(f"Parameter {name} must be a string", {"field": field})
        if len(value) > MAX_VALUE_CHARS or "\x00" in value:
            raise ValidationFailed(f"Parameter {name} must be at most {MAX_VALUE_CHARS} characters, without NUL",
                                   {"field": field})
        pattern = decl.get("pattern")
        if pattern is not None and re.fullmatch(pattern, value) is None:
            raise ValidationFailed(f"Parameter {name} does not match its pattern",
                                   {"field": field, "pattern": pattern})
        (secret if decl.get("secret") else public)[name] = value
    return public, secret


def seal(box: SecretBox | None, public: dict[str, str], secret: dict[str, str]) -> tuple[dict[str, str], str | None]:
    """The two execution columns: public values with each secret's name masked, and the secrets' token."""
    if not secret:
        return dict(public), None
    if box is None:
        raise RuntimeError("secret parameter values need the SecretBox to be stored")
    return {**public, **{name: MASK for name in secret}}, box.encrypt(json.dumps(secret))


def _unsealed(box: SecretBox, secret_token: str | None) -> dict[str, str]:
    return json.loads(box.decrypt(secret_token)) if secret_token else {}


def environment(box: SecretBox, parameters: dict[str, str] | None, secret_token: str | None) -> dict[str, str]:
    """What an action's environment gets: OC_PARAM_<NAME> for each value, secrets decrypted (worker side)."""
    values = {**(parameters or {}), **_unsealed(box, secret_token)}
    return {f"{ENV_PREFIX}{name}": value for name, value in values.items() if _NAME.fullmatch(name)}


def secret_values(box: SecretBox, secret_token: str | None) -> list[str]:
    """The secret values an execution runs with (worker side): its output must never show them."""
    return list(_unsealed(box, secret_token).values())


def copy_parameters(parent: Any, child: Any) -> None:
    """A retry runs with its parent's values: both columns copied as stored (the secrets stay one token,
    never decrypted on the way). `parent` and `child` are Execution rows."""
    child.parameters = dict(parent.parameters or {})
    child.secret_parameters = parent.secret_parameters
