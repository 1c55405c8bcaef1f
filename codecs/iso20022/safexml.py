"""Parse untrusted XML: no DTD, no entities, no network, bounded size and depth."""

from __future__ import annotations

from lxml import etree

from payswitch.codecs.iso20022.errors import Iso20022Error

DEFAULT_MAX_BYTES = 4 * 1024 * 1024  # a pacs.008 of a few hundred transactions
DEFAULT_MAX_DEPTH = 40  # the deepest ISO 20022 payment messages nest about 15 levels


def _parser() -> etree.XMLParser:
    # A fresh parser per call: lxml parsers are not safe to share between threads.
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                           dtd_validation=False, huge_tree=False, remove_pis=True,
                           remove_comments=True, collect_ids=False)


def element_path(el) -> str:
    """``/Document/Msg/Elem[2]/Child``: local names, a 1-based index where repeated."""
    parts = []
    while el is not None:
        name = etree.QName(el).localname
        parent = el.getparent()
        if parent is not None:
            same = [c for c in parent if isinstance(c.tag, str) and c.tag == el.tag]
            if len(same) > 1:
                name += f"[{same.index(el) + 1}]"
        parts.append(name)
        el = parent
    return "/" + "/".join(reversed(parts))


def parse_untrusted(data: bytes | str, *, max_bytes: int = DEFAULT_MAX_BYTES,
                    max_depth: int = DEFAULT_MAX_DEPTH):
    """The root element, or an Iso20022Error with path ``/`` (or the too-deep element)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if len(data) > max_bytes:
        raise Iso20022Error(f"document larger than {max_bytes} bytes")
    # A DTD is how entity expansion and external fetches get in; messages never need one.
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise Iso20022Error("DTDs and entity declarations are not accepted")
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as e:
        line = e.lineno if isinstance(e.lineno, int) else None
        raise Iso20022Error(f"not well-formed XML (line {line})", line=line) from None
    except ValueError:
        raise Iso20022Error("not an XML document") from None
    if root is None:
        raise Iso20022Error("empty document")
    # One XPath step per level: the first element below max_depth, found in C.
    too_deep = root.xpath("/*" + "/*" * max_depth)
    if too_deep:
        el = too_deep[0]
        raise Iso20022Error(f"nested deeper than {max_depth} elements",
                            path=element_path(el), line=el.sourceline)
    return root
