"""The console's screens in the navigation, each shown to the roles that may open it."""

from __future__ import annotations

from typing import Any

from flask_babel import lazy_gettext

from hq.console import accounts

EVERYONE = frozenset(accounts.ROLES)
FLEET_ROLES = frozenset({"monitoring_officer", "fleet_admin", "auditor", "admin"})
FLEET_ADMIN_ROLES = frozenset({"fleet_admin", "admin"})
AUDIT_ROLES = frozenset({"auditor", "admin"})
MONITORING_ROLES = frozenset({"monitoring_officer", "auditor", "admin"})
BACKOFFICE_ROLES = frozenset({"agency_officer", "auditor", "admin"})
DECIDE_ROLES = frozenset({"agency_officer", "admin"})
STAFF_ROLES = frozenset({"fleet_admin", "auditor", "admin"})
STAFF_ADMIN_ROLES = frozenset({"fleet_admin", "admin"})
CATALOG_ROLES = frozenset({"fleet_admin", "monitoring_officer", "auditor", "admin"})
CATALOG_ADMIN_ROLES = frozenset({"fleet_admin", "admin"})
SCREENS = (
    ("auth.index", lazy_gettext("Home"), EVERYONE),
    ("fleet.index", lazy_gettext("Fleet"), FLEET_ROLES),
    ("fleet_admin.index", lazy_gettext("Fleet administration"), FLEET_ROLES),
    ("staff.index", lazy_gettext("Center staff"), STAFF_ROLES),
    ("catalog.index", lazy_gettext("Service catalog"), CATALOG_ROLES),
    ("monitoring.index", lazy_gettext("Monitoring"), MONITORING_ROLES),
    ("backoffice.index", lazy_gettext("Back office"), BACKOFFICE_ROLES),
    ("actions.index", lazy_gettext("Console actions"), AUDIT_ROLES),
)
ROLE_NAMES = {
    "agency_officer": lazy_gettext("Agency officer"),
    "monitoring_officer": lazy_gettext("Monitoring officer"),
    "fleet_admin": lazy_gettext("Fleet administrator"),
    "auditor": lazy_gettext("Auditor"),
    "admin": lazy_gettext("Administrator"),
}


def items(account: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The screens this account may open."""
    if account is None:
        return []
    return [{"endpoint": e, "label": label} for e, label, roles in SCREENS
            if account["role"] in roles]
