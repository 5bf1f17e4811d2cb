"""The `hl7v2_map` step: declarative field-level mapping of HL7 v2 messages, written in the route's YAML.

Each rule does one thing to the fields a path designates (paths: see
`mappings.hl7v2.paths`), optionally only where conditions on other fields hold::

    - hl7v2_map:
        tables: {lab_loinc: tables/lab_loinc.csv}      # CSV beside the route file
        rules:
          - set: MSH-5
            value: PACS
          - set: PV1-2
            value: U
            if_empty: true                              # a default
          - translate: OBX[*]-3.1                       # every OBX: local code -> LOINC
            table: lab_loinc
            to: {OBX-3.1: loinc, OBX-3.2: label, OBX-3.3: system}
          - copy: PID-3[2]
            to: PID-2
          - move: PID-13[2]
            to: PID-14
          - delete: PID-3[*].9
          - reorder: PID-3                              # PI first, then INS; other types dropped
            by: "5"
            order: [PI, INS]
            drop_unlisted: true
          - add_segment: ZPI
            after: PID
            if: {path: ZPI, present: false}
          - remove_segment: NTE
            if: {path: NTE-1, equals: "2"}

A rule that walks ``SEG[*]`` sees, in every other path naming SEG without an
index or with ``[*]`` (in `to:` and `if:`), the occurrence being walked.

A rule that cannot be applied to a message (a `required` path absent, a code
missing from a table with no default) raises `MappingError`: the delivery is
rejected with a reason naming the rule's path (never a value from the
message), stored, and replayable once the route or the table is fixed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from hub.conditions import Selector, ValueTest
from hub.content_types import ContentType
from hub.errors import MappingError, MessageError
from hub.message import Message
from hub.registry import ComponentConfig, register
from mappings.hl7v2.er7 import Delimiters, Er7Message, encode_er7, read_header, unescape
from mappings.hl7v2.paths import ALL, Er7Edit, Hl7Path
from mappings.tables import LookupTable, load_table

__all__ = ["Hl7v2MapConfig", "MapCondition", "MapRule", "hl7_selector", "hl7v2_map", "map_er7"]

_OPS = ("set", "copy", "move", "delete", "translate", "reorder", "add_segment", "remove_segment")


def _op_value(rule: MapRule, op: str) -> str | None:
    values = {
        "set": rule.set, "copy": rule.copy_,  # `copy` would shadow BaseModel.copy
        "move": rule.move, "delete": rule.delete, "translate": rule.translate, "reorder": rule.reorder,
        "add_segment": rule.add_segment, "remove_segment": rule.remove_segment,
    }  # fmt: skip
    return values[op]


Current = tuple[str, int] | None


class MapCondition(ValueTest):
    """`path` plus one test; holds when one of the values the path selects passes the test."""

    path: str = Field(description="HL7 path whose values are tested, e.g. `PV1-2` or `OBX-11`.")

    @field_validator("path")
    @classmethod
    def _parse(cls, v: str) -> str:
        Hl7Path.parse(v)
        return v


class MapRule(ComponentConfig):
    """One mapping rule: exactly one of the operation keys (set, copy, move, delete, translate, reorder,
    add_segment, remove_segment), with the settings it takes."""

    set: str | None = Field(None, description="Path to write `value` at (every occurrence when `SEG[*]`).")
    copy_: str | None = Field(
        None, alias="copy", description="Path read (as written, escapes kept) and written at `to`."
    )
    move: str | None = Field(None, description="Like copy, then the source is deleted.")
    delete: str | None = Field(
        None, description="Path cleared; a repetition named by index (`PID-3[2]`) is removed from the list."
    )
    translate: str | None = Field(
        None, description="Path whose value is looked up in `table`; the row's columns are written per `to`."
    )
    reorder: str | None = Field(None, description="Field whose repetitions are sorted by `by` against `order`.")
    add_segment: str | None = Field(
        None, description="Segment id to insert (empty; fill it with `set`), placed per `after`/`before`."
    )
    remove_segment: str | None = Field(
        None, description="Segment removed: `NTE` every occurrence (that meets `if`), `NTE[2]` the second."
    )
    value: str | None = Field(None, description="set: the text written (escaped with the message's delimiters).")
    to: str | dict[str, str] | None = Field(
        None,
        description="copy/move: the target path. translate: {target path: table column}; default: the "
        "translated path itself gets the table's second column.",
    )
    if_empty: bool = Field(False, description="set: only where the path is empty (a default value).")
    required: bool = Field(
        False,
        description="Reject the message when the path (copy/move source, translate key, set target segment) "
        "is absent or empty, or when reorder keeps no repetition; otherwise the rule skips it.",
    )
    table: str | None = Field(None, description="translate: name of a table from `tables`.")
    key_column: str | None = Field(None, description="translate: column holding the keys; default: the first.")
    default: str | None = Field(None, description="translate: written when the code is not in the table.")
    on_miss: Literal["reject", "keep", "default"] | None = Field(
        None,
        description="translate, code not in the table: reject the message, keep the value, or write `default`. "
        "Default: `default` when one is given, else reject.",
    )
    by: str | None = Field(
        None, pattern=r"^[1-9][0-9]*(\.[1-9][0-9]*)?$", description="reorder: component (`5`, `4.1`) compared."
    )
    order: list[str] | None = Field(None, description="reorder: values of `by`, in the wanted order.")
    drop_unlisted: bool = Field(False, description="reorder: drop repetitions whose `by` is not in `order`.")
    after: str | None = Field(
        None, pattern=r"^[A-Z][A-Z0-9]{2}$", description="add_segment: after the last segment with this id."
    )
    before: str | None = Field(
        None, pattern=r"^[A-Z][A-Z0-9]{2}$", description="add_segment: before the first segment with this id."
    )
    if_: list[MapCondition] = Field(
        default_factory=list,
        alias="if",
        description="Conditions that must all hold (one mapping or a list of them), e.g. {path: PV1-2, equals: I}.",
    )

    @field_validator("if_", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, dict) else v

    @field_validator(*(o if o != "copy" else "copy_" for o in _OPS))
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        if v is not None:
            Hl7Path.parse(v)
        return v

    @field_validator("to")
    @classmethod
    def _to_paths(cls, v: str | dict[str, str] | None) -> str | dict[str, str] | None:
        for p in [v] if isinstance(v, str) else list(v or {}):
            if Hl7Path.parse(p).is_segment:
                raise ValueError(f"{p!r}: a target must name a field")
        return v

    @model_validator(mode="after")
    def _shape(self) -> MapRule:
        ops = [op for op in _OPS if _op_value(self, op) is not None]
        if len(ops) != 1:
            raise ValueError(f"give exactly one operation of {', '.join(_OPS)}")
        op = ops[0]
        path = Hl7Path.parse(_op_value(self, op) or "")
        if op in ("add_segment", "remove_segment"):
            if path.segment == "MSH":
                raise ValueError(f"{op}: MSH is the message header, it stays first and single")
            if not path.is_segment or (op == "add_segment" and path.occurrence is not None):
                raise ValueError(f"{op}: give a segment id{'' if op == 'add_segment' else ' (and an index)'}")
        elif path.is_segment:
            raise ValueError(f"{op}: {path} names a segment; use remove_segment/add_segment")
        elif path.is_delimiters and op != "copy":
            raise ValueError(f"{op}: MSH-1 and MSH-2 (the delimiters) are never changed")
        if op == "set" and self.value is None:
            raise ValueError("set: give `value`")
        if op in ("copy", "move") and not isinstance(self.to, str):
            raise ValueError(f"{op}: give the target path as `to`")
        if op == "translate" and not self.table:
            raise ValueError("translate: give `table`")
        if op == "reorder" and (path.repetition is not None or path.component is not None):
            raise ValueError("reorder: give a whole field, e.g. PID-3")
        if op == "reorder" and (not self.by or not self.order):
            raise ValueError("reorder: give `by` and `order`")
        if self.on_miss == "default" and self.default is None:
            raise ValueError("on_miss: default needs `default`")
        if self.after and self.before:
            raise ValueError("add_segment: give `after` or `before`, not both")
        return self


class Hl7v2MapConfig(ComponentConfig):
    tables: dict[str, str] = Field(
        default_factory=dict,
        description="Lookup tables by name: CSV files (header row first), relative to the route file.",
    )
    rules: list[MapRule] = Field(min_length=1, description="Rules, applied in order.")

    _program: list[_Rule] = PrivateAttr(default_factory=list)

    @field_validator("tables")
    @classmethod
    def _load_tables(cls, v: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        # Checked here (not with the rules) so that table and rule problems are reported together.
        base = Path((info.context or {}).get("route_dir", "."))
        problems = []
        for name, file in v.items():
            try:
                load_table(base / file)
            except ValueError as exc:
                problems.append(f"{name}: {exc}")
        if problems:
            raise ValueError("; ".join(problems))
        return v

    @model_validator(mode="after")
    def _compile(self, info: ValidationInfo) -> Hl7v2MapConfig:
        base = Path((info.context or {}).get("route_dir", "."))
        loaded = {name: load_table(base / file) for name, file in self.tables.items()}  # cached: read once
        problems = []
        for n, rule in enumerate(self.rules):
            try:
                self._program.append(_Rule.build(rule, self.tables, loaded))
            except ValueError as exc:
                problems.append(f"rules.{n}: {exc}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def program(self) -> list[_Rule]:
        return self._program


@dataclasses.dataclass(slots=True)
class _Rule:
    """One compiled rule: parsed paths, resolved table."""

    op: str
    path: Hl7Path
    rule: MapRule
    to: list[tuple[Hl7Path, str]]  # (target, table column) for translate; [(target, "")] for copy/move
    table: LookupTable | None = None
    by: tuple[int, int] = (0, 0)
    conditions: list[tuple[Hl7Path, Callable[[Iterable[str]], bool]]] = dataclasses.field(default_factory=list)
    escaped: tuple[Delimiters, str] | None = None

    @classmethod
    def build(cls, rule: MapRule, files: dict[str, str], tables: dict[str, LookupTable]) -> _Rule:
        op = next(o for o in _OPS if _op_value(rule, o) is not None)
        path = Hl7Path.parse(_op_value(rule, op) or "")
        to: list[tuple[Hl7Path, str]] = []
        table = None
        if isinstance(rule.to, str):
            to = [(Hl7Path.parse(rule.to), "")]
        if op == "translate":
            assert rule.table is not None
            if rule.table not in files:
                raise ValueError(f"translate: no table {rule.table!r} in `tables`")
            table = tables[rule.table]
            if rule.key_column:
                table = load_table(table.path, key=rule.key_column)
            if isinstance(rule.to, dict):
                to = [(Hl7Path.parse(p), column) for p, column in rule.to.items()]
            else:
                if len(table.columns) < 2:
                    raise ValueError(f"translate: table {rule.table!r} has one column; say which to write in `to`")
                to = [(path, next(c for c in table.columns if c != table.key))]
            for _, column in to:
                if column not in table.columns:
                    raise ValueError(
                        f"translate: table {rule.table!r} has no column {column!r} "
                        f"(columns: {', '.join(table.columns)})"
                    )
        by = (0, 0)
        if rule.by:
            comp, _, sub = rule.by.partition(".")
            by = (int(comp), int(sub or 1))
        conditions = [(Hl7Path.parse(c.path), c.compile()) for c in rule.if_]
        return cls(op, path, rule, to, table, by, conditions)

    # -- running ----------------------------------------------------------------------------------
    def run(self, edit: Er7Edit) -> None:
        if self.op == "add_segment":
            if self._holds(edit, None):
                self._add_segment(edit)
            return
        anchors = edit.select(self.path)
        if self.op == "remove_segment":
            if self.path.occurrence is None:
                anchors = edit.occurrences(self.path.segment)
            for i in reversed(anchors):
                if self._holds(edit, (self.path.segment, i)):
                    edit.remove_segment(i)
            return
        if not anchors and self.rule.required:
            raise MappingError(f"hl7v2_map: {self.path}: segment {self.path.segment} is absent")
        for i in anchors:
            current = (self.path.segment, i)
            if self._holds(edit, current):
                getattr(self, f"_{self.op}")(edit, i, current)

    def _holds(self, edit: Er7Edit, current: Current) -> bool:
        for path, test in self.conditions:  # noqa: SIM110  (a loop: no generator per segment walked)
            if not test(edit.values(path, current)):
                return False
        return True

    def _targets(self, edit: Er7Edit, target: Hl7Path, current: Current) -> list[int]:
        found = edit.select(target, current)
        if not found and self.rule.required:
            raise MappingError(f"hl7v2_map: {target}: segment {target.segment} is absent (add_segment it first)")
        return found

    def _set(self, edit: Er7Edit, i: int, current: Current) -> None:
        if self.rule.if_empty and any(edit.raw(i, self.path)):
            return
        assert self.rule.value is not None
        if self.escaped is None or self.escaped[0] != edit.d:
            self.escaped = (edit.d, edit.escape(self.rule.value))  # the same delimiters, message after message
        edit.put(i, self.path, self.escaped[1])

    def _copy(self, edit: Er7Edit, i: int, current: Current) -> None:
        values = edit.raw(i, self.path)
        sep = edit.d.repetition if self.path.repetition == ALL and self.path.component is None else ""
        raw = sep.join(values) if sep else (values[0] if values else "")
        if not raw:
            if self.rule.required:
                raise MappingError(f"hl7v2_map: {self.path} is empty")
            return
        target = self.to[0][0]
        for j in self._targets(edit, target, current):
            edit.put(j, target, raw)
        if self.op == "move":
            edit.delete(i, self.path)

    _move = _copy

    def _delete(self, edit: Er7Edit, i: int, current: Current) -> None:
        edit.delete(i, self.path)

    def _translate(self, edit: Er7Edit, i: int, current: Current) -> None:
        assert self.table is not None
        raws = edit.raw(i, self.path)
        in_place = len(self.to) == 1 and self.to[0][0] == self.path
        if in_place and self.path.repetition == ALL:
            for n, raw in enumerate(raws, start=1):
                new = self._lookup(unescape(raw, edit.d, codec=edit.codec), self.to[0][1])
                if new is not None:
                    edit.put(i, dataclasses.replace(self.path, repetition=n), edit.escape(new))
            return
        key = unescape(raws[0], edit.d, codec=edit.codec) if raws else ""
        row = self._row(key)
        if row is None:
            return
        for target, column in self.to:
            for j in self._targets(edit, target, current):
                edit.put(j, target, edit.escape(row.get(column, "")))

    def _lookup(self, key: str, column: str) -> str | None:
        row = self._row(key)
        return None if row is None else row.get(column, "")

    def _row(self, key: str) -> dict[str, str] | None:
        """The table row of `key`; None to leave the message as is; MappingError to refuse it."""
        assert self.table is not None
        if not key:
            if self.rule.required:
                raise MappingError(f"hl7v2_map: {self.path} is empty")
            return None
        row = self.table.get(key)
        if row is not None:
            return row
        on_miss = self.rule.on_miss or ("default" if self.rule.default is not None else "reject")
        if on_miss == "keep":
            return None
        if on_miss == "default":
            return dict.fromkeys(self.table.columns, self.rule.default or "")
        # The code itself is not quoted: reasons never carry a value taken from the message.
        raise MappingError(f"hl7v2_map: {self.path}: code not in table {self.rule.table!r} and no default")

    def _reorder(self, edit: Er7Edit, i: int, current: Current) -> None:
        assert self.path.field is not None and self.rule.order is not None
        d = edit.d
        reps = [r for r in edit.raw(i, self.path)[0].split(d.repetition) if r]
        comp, sub = self.by
        rank = {v: n for n, v in enumerate(self.rule.order)}
        last = len(rank)

        def key_of(rep: str) -> int:
            comps = rep.split(d.component)
            subs = comps[comp - 1].split(d.subcomponent) if comp <= len(comps) else [""]
            return rank.get(unescape(subs[sub - 1] if sub <= len(subs) else "", d, codec=edit.codec), last)

        ranked = sorted(((key_of(r), n, r) for n, r in enumerate(reps)))
        kept = [r for k, _, r in ranked if k < last or not self.rule.drop_unlisted]
        if not kept and self.rule.required:
            raise MappingError(f"hl7v2_map: {self.path}: no repetition with {self.rule.by} in the listed values")
        edit.set_repetitions(i, self.path.field, kept)

    def _add_segment(self, edit: Er7Edit) -> None:
        if self.rule.after:
            found = edit.occurrences(self.rule.after)
            at = found[-1] + 1 if found else len(edit.segments)
        elif self.rule.before:
            found = edit.occurrences(self.rule.before)
            at = found[0] if found else len(edit.segments)
        else:
            at = len(edit.segments)
        edit.insert_segment(at, self.path.segment)


def map_er7(body: bytes, config: Hl7v2MapConfig) -> tuple[bytes, dict[str, str] | None]:
    """Apply the rules to one ER7 message; return the new bytes, and the new MSH metadata if MSH changed.

    The text is decoded with the character set MSH-18 declares and encoded back
    with it, so bytes of untouched segments come out as they went in.
    """
    edit = Er7Edit(Er7Message(body))
    for rule in config.program:
        rule.run(edit)
    out = encode_er7(edit.text(), edit.codec)
    if isinstance(edit.segments[0], str):
        return out, None
    # MSH-3..6/9/10 may have changed: the routing metadata follows the message that is sent (read from
    # MSH and the first PID only, not from the whole message again).
    head = edit.segment_text(0)
    pid = edit.occurrences("PID")
    if pid:
        head += "\r" + edit.segment_text(pid[0])
    return out, read_header(head)[1].metadata()


@register("step", "hl7v2_map", config=Hl7v2MapConfig, consumes=(ContentType.HL7V2,), produces=ContentType.HL7V2)
def hl7v2_map(message: Message, *, config: Hl7v2MapConfig) -> Message:
    """Set, copy, move, delete, translate and reorder HL7 v2 fields, add and remove segments, by HL7 path."""
    body, metadata = map_er7(message.body, config)
    return message.derive(body=body, **(metadata or {}))


@register("selector", "hl7")
def hl7_selector(expression: str) -> Selector:
    """HL7 path, e.g. `PV1-2` or `OBX[*]-3.1`: its values (unescaped) in an HL7 v2 body."""
    path = Hl7Path.parse(expression)

    def select(message: Message, cache: dict[str, Any]) -> list[str]:
        if message.content_type != ContentType.HL7V2:
            return []
        if "hl7" not in cache:
            try:
                cache["hl7"] = Er7Edit(Er7Message(message.body))
            except MessageError:
                cache["hl7"] = None
        edit = cache["hl7"]
        return [] if edit is None else edit.values(path)

    return select
