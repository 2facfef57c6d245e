"""The `get_current_time` tool: the current date and time in an IANA time zone."""

from datetime import datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .registry import tool

_ALIASES = {"utc": "UTC", "gmt": "UTC", "z": "UTC"}


def resolve_zone(name):
    """A zone name ("Europe/Paris", "utc") -> a tzinfo; raise ValueError if it is unknown."""
    name = (name or "UTC").strip()
    if name.lower() in _ALIASES:
        return timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone '{name}'; use an IANA name such as 'Europe/Paris' or 'UTC'") from None


def now_in(name, now=None):
    """The time `now` (default: the clock; a timezone-aware datetime) seen in zone `name`."""
    now = now or datetime.now(timezone.utc)
    return now.astimezone(resolve_zone(name))


@tool
def get_current_time(timezone: str = "UTC") -> str:
    """Get the current date and time in a time zone.

    Args:
        timezone: an IANA time zone name, e.g. "UTC", "Europe/Paris", "America/New_York"
    """
    local = now_in(timezone)
    return f"{local.isoformat(timespec='seconds')} ({local:%A}, {timezone.strip() or 'UTC'})"
