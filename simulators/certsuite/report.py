"""Reports: a human summary, JUnit XML for a CI, and the exchanged messages per case
(JSON), every PAN masked, every broken rule named (field, expected, got)."""

from __future__ import annotations

import dataclasses
import json
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from payswitch.codecs.iso8583 import Message
from payswitch.codecs.iso8583.message import FIELDS
from payswitch.simulators.certsuite.checks import Violation, shown


@dataclass
class CaseResult:
    name: str
    mandatory: bool
    violations: list[Violation]
    messages: list[dict] = field(default_factory=list)
    ms: float = 0.0
    description: str = ""

    @property
    def passed(self) -> bool:
        return not self.violations


@dataclass
class SuiteResult:
    suite: str
    role: str
    network: str
    target: str
    cases: list[CaseResult]
    notes: list[str] = field(default_factory=list)  # what was not judged, and why

    @property
    def passed(self) -> bool:
        """False when a mandatory case failed (optional failures are reported only)."""
        return all(c.passed for c in self.cases if c.mandatory)


def describe(msg: Message | None, direction: str, at_ms: float | None = None,
             error: str | None = None) -> dict:
    """A message as a report shows it: MTI and each present field, PAN masked, secret
    fields (track 2, PIN block, DE55, MAC, DE48) as their length only."""
    out: dict = {"direction": direction}
    if at_ms is not None:
        out["at_ms"] = round(at_ms, 1)
    if msg is None:
        out["error"] = error or "undecodable"
        return out
    out["mti"] = msg.mti
    fields = {}
    for de, name, _ in FIELDS:
        v = getattr(msg, name)
        if v is None:
            continue
        fields[f"DE{de}"] = "<redacted>" if de in (35, 48) else shown(de, v)
    for de, v in sorted(msg.other.items()):
        fields[f"DE{de}"] = shown(de, v) if isinstance(v, bytes) else "<redacted>"
    if msg.mac is not None:
        fields["MAC"] = f"<{len(msg.mac)} bytes>"
    out["fields"] = fields
    return out


def summary(result: SuiteResult) -> str:
    lines = [f"certify {result.role} {result.network} suite {result.suite} "
             f"against {result.target}"]
    for c in result.cases:
        status = "PASS" if c.passed else ("FAIL" if c.mandatory else "WARN")
        lines.append(f"{status}  {c.name:<36} {c.ms:8.0f} ms")
        for v in c.violations:
            lines.append(f"      {v}")
    lines += [f"note: {n}" for n in result.notes]
    failed = [c for c in result.cases if not c.passed]
    mand = [c for c in failed if c.mandatory]
    lines.append(f"{len(result.cases) - len(failed)}/{len(result.cases)} cases passed; "
                 f"{len(mand)} mandatory failed -> {'PASSED' if result.passed else 'FAILED'}")
    return "\n".join(lines)


def junit_xml(result: SuiteResult) -> str:
    failures = sum(not c.passed for c in result.cases)
    suite = ET.Element("testsuite", name=result.suite, tests=str(len(result.cases)),
                       failures=str(failures), errors="0", skipped="0",
                       time=f"{sum(c.ms for c in result.cases) / 1000:.3f}")
    props = ET.SubElement(suite, "properties")
    for k in ("role", "network", "target"):
        ET.SubElement(props, "property", name=k, value=getattr(result, k))
    for c in result.cases:
        tc = ET.SubElement(suite, "testcase", classname=f"{result.suite}", name=c.name,
                           time=f"{c.ms / 1000:.3f}")
        if not c.passed:
            f = ET.SubElement(tc, "failure", type=c.violations[0].rule,
                              message=str(c.violations[0]))
            f.text = "\n".join(str(v) for v in c.violations)
            if not c.mandatory:
                ET.SubElement(tc, "system-out").text = "optional case"
    root = ET.Element("testsuites")
    root.append(suite)
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


def as_json(result: SuiteResult) -> dict:
    return {
        "suite": result.suite, "role": result.role, "network": result.network,
        "target": result.target, "passed": result.passed, "notes": result.notes,
        "cases": [{"name": c.name, "mandatory": c.mandatory, "passed": c.passed,
                   "ms": round(c.ms, 1),
                   "violations": [dataclasses.asdict(v) for v in c.violations],
                   "messages": c.messages} for c in result.cases],
    }


def write_reports(result: SuiteResult, directory: str) -> dict[str, str]:
    """summary.txt, junit.xml and messages.json in ``directory``; their paths."""
    os.makedirs(directory, exist_ok=True)
    paths = {"summary": os.path.join(directory, "summary.txt"),
             "junit": os.path.join(directory, "junit.xml"),
             "messages": os.path.join(directory, "messages.json")}
    with open(paths["summary"], "w") as f:
        f.write(summary(result) + "\n")
    with open(paths["junit"], "w") as f:
        f.write(junit_xml(result))
    with open(paths["messages"], "w") as f:
        json.dump(as_json(result), f, indent=1)
    return paths
