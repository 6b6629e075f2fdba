"""Segment rules: JSON stored on the Segment, validated up front and compiled to one Q object.

A rule set is a group: ``{"match": "all" | "any", "conditions": [...]}``. A condition is either
another group or ``{"field": ..., "op": ..., "value": ...}``. Apps to the right add condition
types with `register_condition` (consent adds ``consent``), so crm never imports them.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from django.db.models import Exists, OuterRef, Q
from django.utils.dateparse import parse_date, parse_datetime
from django.utils.translation import gettext_lazy as _

from crm.errors import DomainError
from crm.models import Channel, ContactPoint, Language, Tag

MAX_DEPTH: Final = 4
MAX_CONDITIONS: Final = 50


class SegmentRulesInvalid(DomainError):
    code = "segment_rules_invalid"

    def __init__(self, message: str) -> None:
        super().__init__(message, field="rules")


@dataclass(frozen=True)
class ConditionType:
    """How one `field` is checked (`validate`) and turned into SQL (`to_q`)."""

    ops: frozenset[str]
    validate: Callable[[dict[str, Any]], None]
    to_q: Callable[[dict[str, Any], int], Q]


CONDITION_TYPES: dict[str, ConditionType] = {}


def register_condition(field: str, condition_type: ConditionType) -> None:
    CONDITION_TYPES[field] = condition_type


def _require_str(condition: dict[str, Any], key: str = "value") -> str:
    value = condition.get(key)
    if not isinstance(value, str) or not value.strip():
        raise SegmentRulesInvalid(
            _("Condition on “%(field)s” needs a text “%(key)s”.")
            % {"field": condition.get("field"), "key": key}
        )
    return value


def _validate_value_text(condition: dict[str, Any]) -> None:
    _require_str(condition)


def _require_choice(condition: dict[str, Any], choices: type) -> None:
    values = condition.get("value")
    values = values if isinstance(values, list) else [values]
    allowed = set(choices.values)
    wrong = [v for v in values if v not in allowed]
    if not values or wrong:
        raise SegmentRulesInvalid(
            _("“%(value)s” is not one of: %(allowed)s.")
            % {"value": wrong or values, "allowed": ", ".join(sorted(allowed))}
        )


def _choice_q(column: str) -> Callable[[dict[str, Any], int], Q]:
    def to_q(condition: dict[str, Any], team_id: int) -> Q:
        value = condition["value"]
        if condition["op"] == "in":
            return Q(**{f"{column}__in": value})
        q = Q(**{column: value})
        return ~q if condition["op"] == "neq" else q

    return to_q


TEXT_COLUMNS: Final = ("first_name", "last_name", "organisation", "profession", "salutation")


def _validate_text(condition: dict[str, Any]) -> None:
    if condition["op"] == "empty":
        return
    if condition["op"] == "in":
        value = condition.get("value")
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SegmentRulesInvalid(_("“in” needs a list of texts."))
        return
    _require_str(condition)


def _text_q(column: str) -> Callable[[dict[str, Any], int], Q]:
    def to_q(condition: dict[str, Any], team_id: int) -> Q:
        op, value = condition["op"], condition.get("value")
        if op == "empty":
            return Q(**{column: ""})
        if op == "contains":
            return Q(**{f"{column}__icontains": value})
        if op == "in":
            return Q(**{f"{column}__in": value})
        q = Q(**{f"{column}__iexact": value})
        return ~q if op == "neq" else q

    return to_q


def _tag_q(condition: dict[str, Any], team_id: int) -> Q:
    has_tag = Exists(
        Tag.contacts.through.objects.filter(
            contact_id=OuterRef("pk"), tag__team_id=team_id, tag__name=condition["value"]
        )
    )
    return Q(has_tag) if condition["op"] == "has" else ~Q(has_tag)


def _channel_q(condition: dict[str, Any], team_id: int) -> Q:
    has_point = Exists(
        ContactPoint.objects.filter(contact_id=OuterRef("pk"), channel=condition["value"])
    )
    return Q(has_point) if condition["op"] == "has" else ~Q(has_point)


ATTRIBUTE_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


def _validate_attribute(condition: dict[str, Any]) -> None:
    key = _require_str(condition, "key")
    # The key becomes part of an ORM lookup path: "__" would reach into nested lookups.
    if not ATTRIBUTE_KEY.match(key) or "__" in key:
        raise SegmentRulesInvalid(
            _("Attribute keys are letters, digits, “-” and “_”, starting with a letter.")
        )
    if condition["op"] != "exists" and "value" not in condition:
        raise SegmentRulesInvalid(_("Attribute conditions need a “value”."))


def _attribute_q(condition: dict[str, Any], team_id: int) -> Q:
    key, op, value = condition["key"], condition["op"], condition.get("value")
    if op == "exists":
        return Q(attributes__has_key=key)
    if op == "contains":
        return Q(**{f"attributes__{key}__icontains": str(value)})
    q = Q(**{f"attributes__{key}": value})
    return ~q if op == "neq" else q


def _parse_moment(value: Any) -> dt.datetime | dt.date | None:
    if not isinstance(value, str):
        return None
    return parse_datetime(value) or parse_date(value)


def _validate_created(condition: dict[str, Any]) -> None:
    if _parse_moment(condition.get("value")) is None:
        raise SegmentRulesInvalid(_("“created” needs an ISO date such as 2026-01-31."))


def _created_q(condition: dict[str, Any], team_id: int) -> Q:
    moment = _parse_moment(condition["value"])
    lookup = "lt" if condition["op"] == "before" else "gte"
    if isinstance(moment, dt.datetime):
        return Q(**{f"created_at__{lookup}": moment})
    return Q(**{f"created_at__date__{lookup}": moment})


def _no_check(condition: dict[str, Any]) -> None:
    return None


register_condition(
    "language",
    ConditionType(
        frozenset({"eq", "neq", "in"}),
        lambda c: _require_choice(c, Language),
        _choice_q("language"),
    ),
)
register_condition(
    "preferred_channel",
    ConditionType(
        frozenset({"eq", "neq", "in"}),
        lambda c: _require_choice(c, Channel),
        _choice_q("preferred_channel"),
    ),
)
for _column in TEXT_COLUMNS:
    register_condition(
        _column,
        ConditionType(
            frozenset({"eq", "neq", "contains", "in", "empty"}), _validate_text, _text_q(_column)
        ),
    )
register_condition("tag", ConditionType(frozenset({"has", "lacks"}), _validate_value_text, _tag_q))
register_condition(
    "channel",
    ConditionType(frozenset({"has", "lacks"}), lambda c: _require_choice(c, Channel), _channel_q),
)
register_condition(
    "attribute",
    ConditionType(
        frozenset({"eq", "neq", "contains", "exists"}), _validate_attribute, _attribute_q
    ),
)
register_condition(
    "created",
    ConditionType(frozenset({"before", "after"}), _validate_created, _created_q),
)
register_condition(
    "external_id",
    ConditionType(
        frozenset({"present", "missing"}),
        _no_check,
        lambda c, team_id: Q(external_id__isnull=c["op"] == "missing"),
    ),
)


def validate_rules(rules: Any, *, _depth: int = 0, _count: list[int] | None = None) -> None:
    """Raise SegmentRulesInvalid with a readable message unless `rules` is a valid group."""
    count = _count if _count is not None else [0]
    if not isinstance(rules, dict):
        raise SegmentRulesInvalid(_("Rules must be an object with “match” and “conditions”."))
    if _depth > MAX_DEPTH:
        raise SegmentRulesInvalid(_("Rules may nest at most %(n)d groups deep.") % {"n": MAX_DEPTH})
    if rules.get("match", "all") not in ("all", "any"):
        raise SegmentRulesInvalid(_("“match” must be “all” or “any”."))
    conditions = rules.get("conditions", [])
    if not isinstance(conditions, list):
        raise SegmentRulesInvalid(_("“conditions” must be a list."))
    for condition in conditions:
        count[0] += 1
        if count[0] > MAX_CONDITIONS:
            raise SegmentRulesInvalid(
                _("A segment may have at most %(n)d conditions.") % {"n": MAX_CONDITIONS}
            )
        if isinstance(condition, dict) and "conditions" in condition:
            validate_rules(condition, _depth=_depth + 1, _count=count)
            continue
        if not isinstance(condition, dict):
            raise SegmentRulesInvalid(_("Each condition must be an object."))
        field = condition.get("field")
        condition_type = CONDITION_TYPES.get(field)
        if condition_type is None:
            raise SegmentRulesInvalid(
                _("Unknown field “%(field)s”. Known fields: %(known)s.")
                % {"field": field, "known": ", ".join(sorted(CONDITION_TYPES))}
            )
        if condition.get("op") not in condition_type.ops:
            raise SegmentRulesInvalid(
                _("“%(field)s” supports the operators %(ops)s, not “%(op)s”.")
                % {
                    "field": field,
                    "ops": ", ".join(sorted(condition_type.ops)),
                    "op": condition.get("op"),
                }
            )
        condition_type.validate(condition)


def rules_to_q(rules: dict[str, Any], team_id: int) -> Q:
    """Compile validated rules into one Q; an empty group matches every contact."""
    parts = []
    for condition in rules.get("conditions", []):
        if "conditions" in condition:
            parts.append(rules_to_q(condition, team_id))
        else:
            parts.append(CONDITION_TYPES[condition["field"]].to_q(condition, team_id))
    if not parts:
        return Q()
    combined = parts[0]
    for part in parts[1:]:
        combined = combined | part if rules.get("match", "all") == "any" else combined & part
    return combined
