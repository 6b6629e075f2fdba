"""Automation: the bot's answers to inbound messages, and the rules that say which.

A rule matches a keyword as a whole word anywhere in the message. Replies are approved
templates sent through `message_send` like every other message, so the send gate decides;
a refused reply is logged and never breaks the processing of the inbound message.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

from django.db import transaction
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from approvals.errors import RenderError
from approvals.models import MessageTemplate
from consent import keywords as consent_keywords
from crm import selectors as crm_selectors
from crm.errors import PermissionRefused
from crm.models import Team
from messaging.errors import AutomationRuleInvalid, SendRefused
from messaging.models import (
    AutomationRule,
    ChannelAccount,
    Conversation,
    Handler,
    Message,
    RuleAction,
    SenderKind,
)
from messaging.selectors import latest_sendable_version

# Module imports: conversations calls automation_run, and send calls conversations; the
# names are looked up at call time so the import cycle resolves.
from messaging.services import conversations, send

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

logger = logging.getLogger(__name__)

RULE_FIELDS: Final = frozenset(
    {"name", "account", "keywords", "action", "template", "priority", "is_active"}
)
KEYWORD_ACTIONS: Final = frozenset({RuleAction.REPLY_TEMPLATE, RuleAction.HAND_OFF})
REPLY_ACTIONS: Final = frozenset({RuleAction.REPLY_TEMPLATE, RuleAction.DEFAULT_REPLY})
KEYWORD_MAX_CHARS: Final = 60
PRIORITY_MAX: Final = 32767
# casefold() already turned ß into "ss"; German writers without umlaut keys write "ae".
_UMLAUTS: Final = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue"})


def text_fold(text: str) -> str:
    """Case-, umlaut-, accent- and punctuation-insensitive words of a text, space-separated."""
    folded = consent_keywords.fold(text).translate(_UMLAUTS)
    decomposed = unicodedata.normalize("NFKD", folded)
    return "".join(char for char in decomposed if not unicodedata.combining(char))


def mentions(folded_text: str, phrase: str) -> bool:
    """Whether `phrase` occurs in the folded text as whole words ("agent", not "reagent")."""
    needle = text_fold(phrase)
    return bool(needle) and f" {needle} " in f" {folded_text} "


def rules_for(conversation: Conversation) -> list[AutomationRule]:
    """Active rules of the conversation's team that may answer on its account and channel."""
    return list(
        AutomationRule.objects.filter(team_id=conversation.team_id, is_active=True)
        .filter(Q(account__isnull=True) | Q(account_id=conversation.account_id))
        .filter(Q(template__isnull=True) | Q(template__channel=conversation.channel))
        .select_related("template")
        .order_by("priority", "id")
    )


def rule_for_text(rules: Iterable[AutomationRule], text: str) -> AutomationRule | None:
    """The first keyword rule (in the given order) the text mentions, else the default reply."""
    rules = list(rules)
    folded = text_fold(text)
    for rule in rules:
        if rule.action in KEYWORD_ACTIONS and any(
            mentions(folded, keyword) for keyword in rule.keywords or []
        ):
            return rule
    return next((rule for rule in rules if rule.action == RuleAction.DEFAULT_REPLY), None)


@transaction.atomic
def automation_run(*, conversation: Conversation, message: Message) -> Message | None:
    """Answer an inbound message of a bot-handled conversation by the first matching rule.

    Returns the accepted reply, or None (no rule, a hand-off, or the reply was not sendable).
    """
    if conversation.handler != Handler.BOT:
        return None
    rule = rule_for_text(rules_for(conversation), message.body)
    if rule is None:
        return None
    if rule.action == RuleAction.HAND_OFF:
        conversations.conversation_hand_off(conversation=conversation, reason=f"rule:{rule.pk}")
        return None
    version = latest_sendable_version(rule.template) if rule.template else None
    if version is None:
        logger.info("automation rule %s: its template has no sendable version", rule.pk)
        return None
    try:
        return send.message_send(
            contact=conversation.contact,
            account=conversation.account,
            actor=None,
            sender_kind=SenderKind.BOT,
            template_version=version,
            origin=f"rule:{rule.pk}",
        )
    except (SendRefused, RenderError) as exc:
        # The gate (or the contact's data) said no: the inbound message is still processed.
        logger.info("automation rule %s: reply not sent (%s)", rule.pk, exc.code)
        return None


def _clean_keywords(value: Any) -> list[str]:
    if not isinstance(value, list | tuple):
        raise AutomationRuleInvalid(_("Keywords must be a list of words."), field="keywords")
    cleaned: dict[str, str] = {}
    for keyword in value:
        if not isinstance(keyword, str) or not text_fold(keyword):
            raise AutomationRuleInvalid(
                _("Every keyword must be a non-empty word."), field="keywords"
            )
        keyword = " ".join(keyword.split())
        if len(keyword) > KEYWORD_MAX_CHARS:
            raise AutomationRuleInvalid(
                _("A keyword has at most %(max)d characters.") % {"max": KEYWORD_MAX_CHARS},
                field="keywords",
            )
        if consent_keywords.keyword_kind(keyword) in {"withdraw", "grant"}:
            raise AutomationRuleInvalid(
                _("“%(keyword)s” is a consent keyword; consent handles it.") % {"keyword": keyword},
                field="keywords",
            )
        cleaned.setdefault(text_fold(keyword), keyword)
    return list(cleaned.values())


def _rule_channel(rule: AutomationRule) -> str | None:
    """The channel a rule can answer on; None for any."""
    if rule.account is not None:
        return rule.account.channel
    return rule.template.channel if rule.template is not None else None


def _overlaps(rule: AutomationRule, other: AutomationRule) -> bool:
    """Whether two rules can meet the same conversation (account and channel overlap)."""
    if rule.account_id and other.account_id and rule.account_id != other.account_id:
        return False
    channel, other_channel = _rule_channel(rule), _rule_channel(other)
    return channel is None or other_channel is None or channel == other_channel


def _check_rule(rule: AutomationRule) -> None:
    if not rule.name:
        raise AutomationRuleInvalid(_("Give the rule a name."), field="name")
    if len(rule.name) > 120:
        raise AutomationRuleInvalid(_("The name has at most 120 characters."), field="name")
    if rule.action not in RuleAction.values:
        raise AutomationRuleInvalid(
            _("Unknown action “%(action)s”.") % {"action": rule.action}, field="action"
        )
    if isinstance(rule.priority, bool) or not isinstance(rule.priority, int):
        raise AutomationRuleInvalid(_("The priority must be a whole number."), field="priority")
    if not 0 <= rule.priority <= PRIORITY_MAX:
        raise AutomationRuleInvalid(
            _("The priority must be between 0 and %(max)d.") % {"max": PRIORITY_MAX},
            field="priority",
        )
    if rule.account is not None and rule.account.team_id != rule.team_id:
        raise AutomationRuleInvalid(
            _("The channel account belongs to another team."), field="account"
        )
    if rule.action in KEYWORD_ACTIONS and not rule.keywords:
        raise AutomationRuleInvalid(_("This rule needs at least one keyword."), field="keywords")
    if rule.action == RuleAction.DEFAULT_REPLY and rule.keywords:
        raise AutomationRuleInvalid(
            _("The default reply answers what no keyword matched; it takes no keywords."),
            field="keywords",
        )
    _check_template(rule)


def _check_template(rule: AutomationRule) -> None:
    template = rule.template
    if rule.action not in REPLY_ACTIONS:
        if template is not None:
            raise AutomationRuleInvalid(
                _("A hand-off sends nothing; leave the template empty."), field="template"
            )
        return
    if template is None:
        raise AutomationRuleInvalid(_("A reply needs an approved template."), field="template")
    if template.team_id != rule.team_id:
        raise AutomationRuleInvalid(_("The template belongs to another team."), field="template")
    if rule.account is not None and template.channel != rule.account.channel:
        raise AutomationRuleInvalid(
            _("The template is for another channel than the account."), field="template"
        )


def _check_unique_keywords(rule: AutomationRule) -> None:
    """No two active rules that can meet the same conversation listen to the same keyword."""
    if not rule.is_active or not rule.keywords:
        return
    mine = {text_fold(keyword) for keyword in rule.keywords}
    others = (
        AutomationRule.objects.filter(team_id=rule.team_id, is_active=True)
        .exclude(pk=rule.pk)
        .select_related("account", "template")
    )
    for other in others:
        taken = mine & {text_fold(keyword) for keyword in other.keywords or []}
        if taken and _overlaps(rule, other):
            raise AutomationRuleInvalid(
                _("The rule “%(rule)s” already listens to “%(keyword)s”.")
                % {"rule": other.name, "keyword": sorted(taken)[0]},
                field="keywords",
            )


def _apply_fields(rule: AutomationRule, fields: dict[str, Any]) -> None:
    unknown = set(fields) - RULE_FIELDS
    if unknown:
        raise AutomationRuleInvalid(
            _("Unknown fields: %(names)s.") % {"names": ", ".join(sorted(unknown))},
            field=sorted(unknown)[0],
        )
    for name, value in fields.items():
        if name == "name":
            value = (value or "").strip()
        elif name == "keywords":
            value = _clean_keywords(value)
        elif name == "account" and value is not None and not isinstance(value, ChannelAccount):
            raise AutomationRuleInvalid(_("Choose a channel account."), field="account")
        elif name == "template" and value is not None and not isinstance(value, MessageTemplate):
            raise AutomationRuleInvalid(_("Choose a template."), field="template")
        setattr(rule, name, value)


def _ensure_may(actor: AbstractBaseUser | None, perm: str, team_id: int) -> None:
    if actor is not None and not crm_selectors.user_may_write(actor, perm, team_id):
        raise PermissionRefused(_("You may not change automation rules of this team."))


def _save_rule(rule: AutomationRule, actor: AbstractBaseUser | None) -> AutomationRule:
    # Serialise rule changes per team: the keyword check must see every concurrent rule.
    Team.objects.select_for_update().only("pk").get(pk=rule.team_id)
    _check_rule(rule)
    _check_unique_keywords(rule)
    if actor is not None:
        rule._history_user = actor
    rule.save()
    return rule


@transaction.atomic
def automation_rule_create(
    *, team: Team, actor: AbstractBaseUser | None, **fields: Any
) -> AutomationRule:
    """Create a rule: keyword rules reply with a template or hand off; the default reply
    (no keywords) answers everything else. Replies need a template of the team."""
    _ensure_may(actor, "messaging.add_automationrule", team.pk)
    rule = AutomationRule(team=team)
    _apply_fields(rule, fields)
    return _save_rule(rule, actor)


@transaction.atomic
def automation_rule_update(
    *, rule: AutomationRule, actor: AbstractBaseUser | None, **fields: Any
) -> AutomationRule:
    """Change a rule with the same checks as on creation (the team stays)."""
    _ensure_may(actor, "messaging.change_automationrule", rule.team_id)
    locked = AutomationRule.objects.select_for_update().get(pk=rule.pk)
    _apply_fields(locked, fields)
    return _save_rule(locked, actor)
