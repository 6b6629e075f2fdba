"""Authentication backends: Django's model permissions, read in one query per request."""

from __future__ import annotations

from functools import cache
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.db import connections, router


class RolePermissionBackend(ModelBackend):
    """ModelBackend with a user's permissions, their own and their groups' (the roles), read
    by one fixed statement.

    Every API request and admin page asks has_perm; ModelBackend answers the first question
    of a request with two queries built through the ORM, about 2 ms of a 25 ms list request.
    The answer is the same set ("app_label.codename"), cached on the user object as Django
    caches it; superusers, inactive and anonymous users and object permissions are
    ModelBackend's own answers (guardian answers object permissions).
    """

    def get_all_permissions(self, user_obj: Any, obj: Any = None) -> set[str]:
        if (
            not user_obj.is_active
            or user_obj.is_anonymous
            or obj is not None
            or user_obj.is_superuser
        ):
            return super().get_all_permissions(user_obj, obj)
        if not hasattr(user_obj, "_perm_cache"):
            user_obj._perm_cache = _permissions_of(user_obj.pk)
        return user_obj._perm_cache


def _permissions_of(user_id: int) -> set[str]:
    database = router.db_for_read(Permission)
    with connections[database].cursor() as cursor:
        cursor.execute(_permissions_sql(), [user_id, user_id])
        return {f"{app_label}.{codename}" for app_label, codename in cursor.fetchall()}


@cache
def _permissions_sql() -> str:
    user_model = get_user_model()
    tables = {
        "permission": Permission._meta.db_table,
        "content_type": ContentType._meta.db_table,
        "user_permissions": user_model.user_permissions.through._meta.db_table,
        "user_groups": user_model.groups.through._meta.db_table,
        "group_permissions": Group.permissions.through._meta.db_table,
    }
    # Table names come from model metadata; the user id is a parameter.
    return """
        SELECT content_type.app_label, permission.codename
        FROM {permission} permission
        JOIN {content_type} content_type ON content_type.id = permission.content_type_id
        WHERE permission.id IN (
            SELECT granted.permission_id FROM {user_permissions} granted
            WHERE granted.user_id = %s
            UNION ALL
            SELECT granted.permission_id FROM {group_permissions} granted
            JOIN {user_groups} member ON member.group_id = granted.group_id
            WHERE member.user_id = %s
        )
    """.format(**tables)  # noqa: S608
