"""One self-contained OpenAPI document for Prism from an official 3GPP YAML.

The official files reference each other (``TS29122_CommonData.yaml#/…``,
``TS29571_CommonData.yaml#/…``) and, through them, files that are not in the
set (Prism resolves every reference and refuses to start on a missing one).
This keeps the operations of the main file and copies into its ``components``
only the schemas, responses and parameters they reach, following references
across files, with names prefixed by the file they came from. Nothing is
changed in a schema itself.
"""

import copy
from pathlib import Path
from typing import Any

import yaml

_KINDS = ("schemas", "responses", "parameters", "headers", "requestBodies")


class _Bundler:
    def __init__(self, folder: Path, main: str) -> None:
        self.folder = folder
        self.main = main
        self.docs: dict[str, dict[str, Any]] = {}
        self.out: dict[str, dict[str, Any]] = {k: {} for k in _KINDS}

    def doc(self, name: str) -> dict[str, Any]:
        if name not in self.docs:
            self.docs[name] = yaml.safe_load((self.folder / name).read_text("utf-8"))
        return self.docs[name]

    def local_name(self, file: str, name: str) -> str:
        if file == self.main:
            return name
        return file.removesuffix(".yaml").replace("-", "_") + "_" + name

    def ref(self, file: str, target: str) -> str:
        path, _, pointer = target.partition("#")
        source = path or file
        parts = pointer.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "components":
            raise ValueError(f"unsupported $ref {target} in {file}")
        kind, name = parts[1], parts[2]
        local = self.local_name(source, name)
        if local not in self.out[kind]:
            self.out[kind][local] = {}  # placeholder against cycles
            node = self.doc(source)["components"][kind][name]
            self.out[kind][local] = self.walk(source, copy.deepcopy(node))
        return f"#/components/{kind}/{local}"

    def walk(self, file: str, node: Any) -> Any:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                return dict(node, **{"$ref": self.ref(file, node["$ref"])})
            return {k: self.walk(file, v) for k, v in node.items()}
        if isinstance(node, list):
            return [self.walk(file, v) for v in node]
        return node


def _one(folder: Path, main: str) -> dict[str, Any]:
    bundler = _Bundler(folder, main)
    document = copy.deepcopy(bundler.doc(main))
    base = ""
    for server in document.pop("servers", None) or ():
        base = str(server.get("url", "")).replace("{apiRoot}", "")
    document["paths"] = {
        base + path: item
        for path, item in bundler.walk(main, document["paths"]).items()
    }
    components = document.get("components", {})
    for kind, entries in list(components.items()):
        if kind in _KINDS:
            for name in entries:
                bundler.ref(main, f"#/components/{kind}/{name}")
    for kind in _KINDS:
        if bundler.out[kind]:
            components[kind] = bundler.out[kind]
    document["components"] = components
    return document


def bundle(folder: Path, mains: list[str], target: Path) -> Path:
    """Write one document serving every API of ``mains`` to ``target``.

    Each API's paths keep the base path of its ``servers`` entry
    (``/3gpp-monitoring-event/v1/...``), so one mock serves the whole
    ``{apiRoot}`` of a NEF. Components of the same name must be identical.
    """
    merged: dict[str, Any] | None = None
    for main in mains:
        document = _one(folder, main)
        if merged is None:
            merged = document
            continue
        merged["paths"].update(document["paths"])
        for kind, entries in document["components"].items():
            into = merged["components"].setdefault(kind, {})
            for name, value in entries.items():
                if name in into and into[name] != value:
                    raise ValueError(f"{kind} {name} differs between the APIs")
                into[name] = value
    assert merged is not None
    target.write_text(yaml.safe_dump(merged, sort_keys=False), "utf-8")
    return target
