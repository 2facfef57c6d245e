"""The `get_current_time` tool: the current date and time in an IANA time zone."""

import difflib
import functools
import re
from datetime import datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from .registry import tool

_ALIASES = {"utc": "UTC", "gmt": "UTC", "z": "UTC"}


@functools.cache
def _zones() -> tuple[str, ...]:
    """The IANA names of places ("Asia/Jakarta"), shortest first: the names a suggestion may give."""
    return tuple(sorted((z for z in available_timezones() if "/" in z and not z.startswith(("Etc/", "SystemV/"))),
                        key=lambda z: (len(z), z)))


def suggest_zone(name: str) -> str | None:
    """The zone a name that is none most likely meant, or None: the same name in other case or spacing
    ("america/new york"), a zone of that city ("Jakarta" -> "Asia/Jakarta"), or for a "Region/City" name
    a close spelling ("America/Buenos_Ribera" -> "America/Buenos_Aires"). A bare name is matched by its
    city only: a close spelling of one city is often another ("Mumbai", "Dubai")."""
    wanted = re.sub(r"\s*/\s*", "/", name.split(",")[0].strip()).replace(" ", "_")  # "Tokyo, Japan": the city
    city = wanted.rsplit("/", 1)[-1].lower()
    for zone in _zones():
        if zone.lower() == wanted.lower():
            return zone
    for zone in _zones():
        if zone.rsplit("/", 1)[-1].lower() == city:
            return zone
    if "/" in wanted:
        close = difflib.get_close_matches(wanted, _zones(), n=1, cutoff=0.8)
        return close[0] if close else None
    return None


def resolve_zone(name):
    """A zone name ("Europe/Paris", "utc") -> a tzinfo; raise ValueError if it is unknown, naming the zone
    it most likely meant when there is one (the model reading the error can mend its call)."""
    name = (name or "UTC").strip()
    if name.lower() in _ALIASES:
        return timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        meant = suggest_zone(name)
        hint = f"did you mean '{meant}'?" if meant else "use an IANA name such as 'Europe/Paris' or 'UTC'"
        raise ValueError(f"unknown time zone '{name}'; {hint}") from None


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
