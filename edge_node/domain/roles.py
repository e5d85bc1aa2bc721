"""Staff roles and which groups of screens/actions each may use."""

from __future__ import annotations

ROLES: tuple[str, ...] = (
    "receptionist", "operator", "supervisor", "manager", "volunteer",
    "technician", "auditor", "kiosk", "display",
)

# Groups used by routes: a route names the roles allowed to call it.
RECEPTION = frozenset({"receptionist", "volunteer", "supervisor", "manager"})
OPERATORS = frozenset({"operator", "supervisor", "manager"})
SUPERVISORS = frozenset({"supervisor", "manager"})
MANAGERS = frozenset({"manager"})
FEEDBACK = frozenset({"kiosk", "operator", "supervisor", "manager"})
BOARD = frozenset({"display", "receptionist", "operator", "supervisor", "manager", "volunteer"})
AUDITORS = frozenset({"auditor", "supervisor", "manager"})
TECHNICIANS = frozenset({"technician", "manager"})
STAFF = frozenset(ROLES) - {"kiosk", "display"}
ANY_ROLE = frozenset(ROLES)
