"""Which API key goes to which endpoint: one key per endpoint, never the model's key to the judge's host.

``--api-key-env NAME`` names the environment variable holding the model endpoint's key, ``--judge-api-key-env
NAME`` the judge's. Without them both fall back to ``$OPENAI_API_KEY``; if that is set and the model endpoint and
the judge live on different hosts, the run stops and asks which key goes where instead of sending one provider's
key to the other. Keys are only ever read from the environment: status files, logs and reports record the
variable's name, never its value.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping
from urllib.parse import urlsplit

from bluelm_v.evaluation.errors import EvaluationError

DEFAULT_ENV = "OPENAI_API_KEY"


@dataclass(frozen=True)
class EndpointKeys:
    model: str | None
    judge: str | None
    model_env: str | None  # the variable the model's key came from (None: no key sent)
    judge_env: str | None

    def describe(self) -> dict:
        """What status.json records: the variables' names only."""
        return {"model_key_env": self.model_env, "judge_key_env": self.judge_env}


def endpoint_origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of an endpoint URL, the port made explicit."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise EvaluationError(f"endpoint URL {url!r} has a malformed port") from None
    port = port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


def _named(flag: str, name: str, environ: Mapping[str, str]) -> str:
    if not name or "=" in name:
        raise EvaluationError(f"{flag} takes the name of an environment variable, got {name!r}")
    value = environ.get(name)
    if not value:
        raise EvaluationError(f"{flag} {name}: the environment variable ${name} is not set")
    return value


def resolve_keys(model_url: str | None, judge_url: str | None, *, model_env: str | None = None,
                 judge_env: str | None = None, environ: Mapping[str, str] | None = None) -> EndpointKeys:
    """The key for the model endpoint (``model_url``, None for local models) and for the judge (``judge_url``,
    None for no judge or a non-HTTP one)."""
    env = os.environ if environ is None else environ
    model_key = judge_key = None
    m_env = j_env = None
    if model_env is not None:
        model_key, m_env = _named("--api-key-env", model_env, env), model_env
    elif model_url is not None and env.get(DEFAULT_ENV):
        model_key, m_env = env[DEFAULT_ENV], DEFAULT_ENV
    if judge_env is not None:
        judge_key, j_env = _named("--judge-api-key-env", judge_env, env), judge_env
    elif judge_url is not None and env.get(DEFAULT_ENV):
        judge_key, j_env = env[DEFAULT_ENV], DEFAULT_ENV
    if (model_env is None and judge_env is None and model_url is not None and judge_url is not None
            and env.get(DEFAULT_ENV)):
        a, b = endpoint_origin(model_url), endpoint_origin(judge_url)
        if a != b:
            raise EvaluationError(
                f"${DEFAULT_ENV} would be sent both to the model endpoint ({a[0]}://{a[1]}:{a[2]}) and to the "
                f"judge ({b[0]}://{b[1]}:{b[2]}), which are different endpoints; say which key goes where with "
                "--api-key-env NAME and --judge-api-key-env NAME (name the same variable twice if one key is meant "
                "for both)")
    return EndpointKeys(model_key, judge_key, m_env, j_env)


__all__ = ["DEFAULT_ENV", "EndpointKeys", "endpoint_origin", "resolve_keys"]
