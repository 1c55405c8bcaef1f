"""The official XSDs, read from a directory the caller names (never shipped here).

Each message type has one version the codec writes and reads. ``SchemaStore``
loads ``<version>.xsd`` from its directory on first use and validates with lxml
(libxml2); validation errors come back as one Iso20022Error naming the element.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

from lxml import etree

from payswitch.codecs.iso20022.errors import Iso20022Error, SchemaMissing
from payswitch.codecs.iso20022.safexml import element_path

# Message type -> the version payswitch speaks (ISO 20022 2019/2020 releases).
VERSIONS = {
    "pain.001": "pain.001.001.09",
    "pacs.008": "pacs.008.001.08",
    "pacs.002": "pacs.002.001.10",
    "pacs.004": "pacs.004.001.09",
    "pacs.028": "pacs.028.001.03",
    "camt.056": "camt.056.001.09",
    "camt.053": "camt.053.001.08",
    "camt.054": "camt.054.001.08",
}
NS_PREFIX = "urn:iso:std:iso:20022:tech:xsd:"
_VERSION = re.compile(r"[a-z]{4}\.\d{3}\.\d{3}\.\d{2}")


def namespace(version: str) -> str:
    return NS_PREFIX + version


def version_of(root) -> str:
    """The message version from the root's namespace, or an error at ``/Document``."""
    ns = etree.QName(root).namespace or ""
    version = ns[len(NS_PREFIX):] if ns.startswith(NS_PREFIX) else ""
    if etree.QName(root).localname != "Document" or not _VERSION.fullmatch(version):
        raise Iso20022Error("root is not an ISO 20022 Document", path=element_path(root))
    return version


# libxml2's messages quote the offending value, which may be a name or an account:
# it is cut out before the reason reaches a log or a pacs.002. What the schema
# allows (facets, patterns, enumerations) is kept, it tells the sender the fix.
_CLARK = re.compile(r"\{(?:urn|http)[^}]*\}")
_ELEMENT = re.compile(r"^Element '[^']*'(, attribute '([^']*)')?: ")
_VALUE = [re.compile(r"The value '[^']*'"), re.compile(r"^'[^']*' is not")]


def _reason(message: str) -> str:
    text = _CLARK.sub("", message.strip())
    m = _ELEMENT.match(text)
    attr = f"attribute {m.group(2)}: " if m and m.group(2) else ""
    text = attr + (text[m.end():] if m else text)
    text = _VALUE[0].sub("The value", text)
    return _VALUE[1].sub("The value is not", text)


class SchemaStore:
    """XSDs from one directory, loaded once each (thread-safe)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._schemas: dict[str, etree.XMLSchema] = {}
        self._lock = threading.Lock()
        self._validating = threading.Lock()

    def path(self, version: str) -> Path:
        return self.directory / f"{version}.xsd"

    def has(self, version: str) -> bool:
        return self.path(version).is_file()

    def schema(self, version: str) -> etree.XMLSchema:
        with self._lock:
            s = self._schemas.get(version)
            if s is None:
                p = self.path(version)
                if not p.is_file():
                    raise SchemaMissing(f"no schema {p.name} in the schema directory",
                                        message_type=version)
                parser = etree.XMLParser(resolve_entities=False, no_network=True)
                s = self._schemas[version] = etree.XMLSchema(etree.parse(str(p), parser))
            return s

    def validate(self, root, version: str | None = None) -> None:
        """Raise Iso20022Error for the first schema violation, naming its element."""
        version = version or version_of(root)
        schema = self.schema(version)
        # One validation at a time per store: an XMLSchema's error log is shared, and
        # two threads validating at once lose each other's errors (tested).
        with self._validating:
            if schema.validate(root):
                return
            err = schema.error_log[0]
        path = "/"
        try:
            found = root.getroottree().xpath(err.path) if err.path else []
            if found:
                path = element_path(found[0])
        except etree.XPathError:
            pass
        raise Iso20022Error(_reason(err.message), path=path, line=err.line or None,
                            message_type=version)
