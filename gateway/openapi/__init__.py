"""One OpenAPI 3.1 document per config, from the stacks themselves (docs/openapi.md).

Each backend describes itself (``sources.py``: its ``openapi`` key, drf-spectacular
for a Django project, an introspection of a Flask-RESTful app). The gateway puts
each stack's paths under the prefix of the routes that serve it and lays its own
layer on top (``layer.py``). A stack is documented under the routes to it that
have a ``version``; a stack no versioned route serves, under every route to it.
When several routes share a prefix (narrowed by ``hosts`` or ``methods``), the
first in file order describes it. A split route shows its heaviest stack's
operations, and where its stacks disagree (``diff.py``) in ``x-stackgate-contract-diff``.

Built once per config digest (``document``), off the event loop.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Optional

from gateway.openapi.diff import METHODS, contract_diff, normal_path
from gateway.openapi.layer import ERRORS, SECURITY_SCHEMES, RouteLayer, error_name, error_response, error_schema, headers
from gateway.openapi.sources import SchemaSourceError, stack_document
from gateway.policies.auth.schema import SCHEMES

__all__ = ["build_document", "document", "route_contract_diff", "stack_documents"]

OPENAPI_VERSION = "3.1.0"
_COMPONENT_KINDS = ("schemas", "responses", "parameters", "examples", "requestBodies", "headers", "links", "callbacks", "pathItems")


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", label).strip("_") or "root"


def _config_dir(config: Any) -> Path:
    source = getattr(config, "source", None)
    return Path(source).resolve().parent if source else Path.cwd()


def stack_documents(config: Any, names: Optional[list[str]] = None) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Each backend's own document (those that have one), and the problems met."""
    docs: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for name, backend_config in config.backends.items():
        if names is not None and name not in names:
            continue
        try:
            doc = stack_document(name, backend_config, _config_dir(config))
        except SchemaSourceError as exc:
            problems.append(str(exc))
            continue
        if doc is not None:
            docs[name] = doc
    return docs, problems


def _backends_of(route: Any) -> list[str]:
    if route.backend:
        return [route.backend]
    return [name for name, _ in sorted(route.split.items(), key=lambda item: -item[1])]


def _rewrite_refs(node: Any, renames: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: (renames.get(v, v) if k == "$ref" and isinstance(v, str) else _rewrite_refs(v, renames)) for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite_refs(v, renames) for v in node]
    return node


def _merge_components(merged: dict[str, Any], name: str, doc: dict[str, Any]) -> dict[str, Any]:
    """Add ``doc``'s components to ``merged``; return ``doc`` with refs to renamed ones rewritten.

    A component another stack (or the gateway) already defines differently is renamed
    ``<backend>.<Name>``.
    """
    components = doc.get("components") or {}
    renames: dict[str, str] = {}
    for kind in _COMPONENT_KINDS:
        for key, value in (components.get(kind) or {}).items():
            existing = merged.get(kind, {}).get(key)
            if existing is not None and existing != value:
                renames[f"#/components/{kind}/{key}"] = f"#/components/{kind}/{name}.{key}"
    doc = _rewrite_refs(doc, renames) if renames else doc
    for kind in _COMPONENT_KINDS:
        for key, value in ((doc.get("components") or {}).get(kind) or {}).items():
            target = f"{name}.{key}" if f"#/components/{kind}/{key}" in renames else key
            merged.setdefault(kind, {}).setdefault(target, value)
    return doc


def _documented_routes(config: Any, docs: dict[str, Any]) -> list[tuple[Any, list[str]]]:
    versioned = {b for r in config.routes if r.version is not None for b in _backends_of(r)}
    seen: set[str] = set()
    out = []
    for route in config.routes:
        stacks = [b for b in _backends_of(route) if b in docs and (route.version is not None or b not in versioned)]
        if stacks and route.prefix not in seen:
            seen.add(route.prefix)
            out.append((route, stacks))
    return out


def _route_paths(route: Any, layer: RouteLayer, slug: str, doc: dict[str, Any]) -> dict[str, Any]:
    base = "" if route.prefix == "/" else route.prefix
    out: dict[str, Any] = {}
    for path, item in (doc.get("paths") or {}).items():
        public = base + normal_path(path) if normal_path(path) != "/" else base + "/"
        new_item: dict[str, Any] = {k: copy.deepcopy(v) for k, v in item.items() if k not in METHODS}
        for method in METHODS:
            op = item.get(method)
            if not isinstance(op, dict) or not layer.allows(method):
                continue
            op = copy.deepcopy(op)
            op_id = op.get("operationId") or f"{method}{_slug(path)}"
            op["operationId"] = f"{slug}_{op_id}"
            op["tags"] = [route.label]
            new_item[method] = layer.apply(op)
        if set(new_item) & set(METHODS):
            out.setdefault(public, {}).update(new_item)
    return out


def build_document(config: Any, docs: Optional[dict[str, dict[str, Any]]] = None, problems: Optional[list[str]] = None) -> dict[str, Any]:
    """The merged OpenAPI 3.1 document of ``config`` (a fresh dict); the stacks' own if given."""
    if docs is None:
        docs, problems = stack_documents(config)
    problems = list(problems or [])
    components: dict[str, Any] = {
        "schemas": {"Error": error_schema()},
        "responses": {error_name(status): error_response(status) for status in ERRORS},
        "headers": headers(),
    }
    merged_docs = {name: _merge_components(components, name, doc) for name, doc in docs.items()}
    paths: dict[str, Any] = {}
    tags = []
    diffs: dict[str, Any] = {}
    slugs: set[str] = set()
    used: set[str] = set()
    for route, stacks in _documented_routes(config, merged_docs):
        slug = base = _slug(route.label)
        n = 1
        while slug in slugs:
            n += 1
            slug = f"{base}_{n}"
        slugs.add(slug)
        layer = RouteLayer(route, config)
        if layer.mode != "none":
            used.update(layer.schemes)
        for path, item in _route_paths(route, layer, slug, merged_docs[stacks[0]]).items():
            paths.setdefault(path, item)
        count = None
        if len(stacks) > 1:
            differences = contract_diff({name: docs[name] for name in stacks})
            diffs[route.label] = {"stacks": stacks, "differences": differences}
            count = len(differences)
        tags.append(layer.tag(stacks, count))
    if used:
        components["securitySchemes"] = {SECURITY_SCHEMES[name][0]: SECURITY_SCHEMES[name][1] for name in SCHEMES if name in used}
    out: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Stackgate",
            "version": config.digest or "unversioned",
            "summary": "The APIs of this gateway's stacks, as each describes itself, under their routes.",
            "description": (
                "Generated from the gateway's live config (`info.version` is the config's digest) and from "
                "each stack's own description of itself (drf-spectacular, a Flask-RESTful introspection, or "
                "the backend's `openapi` file or URL). The gateway adds its own layer: authentication, rate "
                "limits, version headers and its errors, which all have one JSON shape (`Error`)."
            ),
        },
        "servers": [{"url": "/"}],
        "tags": tags,
        "paths": paths,
        "components": components,
    }
    if diffs:
        out["x-stackgate-contract-diff"] = diffs
    if problems:
        out["x-stackgate-problems"] = problems
    return out


def route_contract_diff(config: Any, route_name: str) -> tuple[Any, list[str], list[dict[str, str]]]:
    """``(route, stacks, differences)`` of the split route named (or prefixed) ``route_name``.

    LookupError when there is no such route or it is not a split of stacks with documents.
    """
    route = next((r for r in config.routes if r.label == route_name), None) or next((r for r in config.routes if r.prefix == route_name), None)
    if route is None:
        raise LookupError(f'no route named "{route_name}" (give its name or its prefix)')
    if not route.split:
        raise LookupError(f'route "{route.label}" is not a split: it has one backend, "{route.backend}"')
    names = _backends_of(route)
    docs, problems = stack_documents(config, names)
    if problems:
        raise LookupError("; ".join(problems))
    stacks = [name for name in names if name in docs]
    if len(stacks) < 2:
        raise LookupError(f'route "{route.label}": fewer than two of its stacks ({", ".join(names)}) have an OpenAPI document')
    return route, stacks, contract_diff({name: docs[name] for name in stacks})


_CACHE: "OrderedDict[str, bytes]" = OrderedDict()
_CACHE_SIZE = 8
_LOCK = threading.Lock()


def document_bytes(config: Any) -> bytes:
    """``build_document(config)`` as compact JSON, built once per config digest."""
    key = config.digest
    with _LOCK:
        cached = _CACHE.get(key) if key else None
        if cached is not None:
            _CACHE.move_to_end(key)
            return cached
        body = json.dumps(build_document(config), separators=(",", ":")).encode()
        if key:
            _CACHE[key] = body
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
        return body


async def document(config: Any) -> bytes:
    """``document_bytes`` for a request: the first build per config runs in a thread."""
    cached = _CACHE.get(config.digest) if config.digest else None
    if cached is not None:
        return cached
    return await asyncio.to_thread(document_bytes, config)
