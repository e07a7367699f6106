"""The signer's caches never give a stale answer.

:func:`amz_date` keeps the stamp of the last second it formatted, and :class:`Signer` keeps derived keys (with
their HMAC pads hashed) per secret, date, region and service. Every answer here is checked against the
uncached computation: the stamp formatted from scratch, the key derived with :mod:`hmac` as the SigV4 guide
gives it, the signature as HMAC-SHA256 of the string to sign under that key.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from sigproxy.signing import EMPTY_SHA256, CanonicalInput, Credentials, Signer, amz_date

SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


def stamp(now: datetime) -> str:
    """The stamp computed from scratch."""
    t = now.astimezone(UTC)
    return f"{t.year:04d}{t.month:02d}{t.day:02d}T{t.hour:02d}{t.minute:02d}{t.second:02d}Z"


def derived(secret: str, date: str, region: str, service: str) -> bytes:
    """``kSigning`` as the SigV4 guide derives it."""
    key = f"AWS4{secret}".encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


class TestAmzDate:
    def test_within_and_across_seconds(self) -> None:
        """Times a microsecond either side of each second's edge, and across a year's, get their own second."""
        edge = datetime(2025, 12, 31, 23, 59, 58, tzinfo=UTC)
        times = [edge + timedelta(seconds=s, microseconds=us) for s in range(3) for us in (0, 1, 500_000, 999_999)]
        times += [edge + timedelta(seconds=3, microseconds=-1), edge + timedelta(seconds=3)]
        for now in times:
            assert amz_date(now) == stamp(now)
        assert amz_date(edge + timedelta(seconds=2)) == "20260101T000000Z"
        assert amz_date(edge + timedelta(seconds=1, microseconds=999_999)) == "20251231T235959Z"

    def test_clock_going_back(self) -> None:
        """A clock stepped back (or times out of order) gets the earlier second, not the one kept."""
        later = datetime(2025, 3, 1, 12, 0, 5, 100, tzinfo=UTC)
        for now in (later, later - timedelta(microseconds=101), later - timedelta(hours=1), later):
            assert amz_date(now) == stamp(now)

    @pytest.mark.parametrize(
        "tz", [timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(0)), ZoneInfo("America/New_York")],
    )
    def test_other_time_zones(self, tz: timezone | ZoneInfo) -> None:
        """An aware time in another zone is stamped in UTC, whether its UTC second is the one kept or not."""
        utc = datetime(2025, 7, 4, 23, 30, 0, 250_000, tzinfo=UTC)
        amz_date(utc)
        for now in (utc.astimezone(tz), (utc + timedelta(seconds=1)).astimezone(tz), utc, utc.astimezone(tz)):
            assert amz_date(now) == stamp(now)
        assert amz_date(utc.astimezone(tz)) == "20250704T233000Z"

    def test_naive_refused_even_in_the_kept_second(self) -> None:
        """A naive time is refused, also when its fields name the second just stamped."""
        now = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
        amz_date(now)
        with pytest.raises(ValueError, match="timezone-aware"):
            amz_date(now.replace(tzinfo=None))

    def test_last_second_there_is(self) -> None:
        """The very last second (no next second to bound it) is stamped, every time."""
        last = datetime.max.replace(tzinfo=UTC)
        assert amz_date(last) == amz_date(last) == "99991231T235959Z"
        assert amz_date(last - timedelta(seconds=1)) == "99991231T235958Z"


class TestSigningKeys:
    def test_documented_key(self) -> None:
        """The SigV4 guide's worked example of a derived key (``iam``, ``us-east-1``, 2012-02-15)."""
        key = Signer().signing_key(SECRET, "20120215", "us-east-1", "iam")
        assert key.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"

    @pytest.mark.parametrize("cache_size", [1, 2, 4096])
    def test_every_scope_its_own_key(self, cache_size: int) -> None:
        """Each (secret, date, region, service) gets its own key, in any order, whether it was kept, evicted
        or never kept."""
        signer = Signer(key_cache_size=cache_size)
        scopes = list(itertools.product([SECRET, "other-secret"], ["20250101", "20250102"],
                                        ["us-east-1", "eu-west-1"], ["s3", "sqs"]))
        for scope in [*scopes, *reversed(scopes), *scopes[::3]]:
            assert signer.signing_key(*scope) == derived(*scope)

    @pytest.mark.parametrize("cache_size", [1, 4096])
    def test_signature_is_the_mac_of_the_string_to_sign(self, cache_size: int) -> None:
        """Across days, regions, services and secrets, the signature is HMAC-SHA256 of the string to sign under
        that scope's key (the kept pads give the same MAC as :func:`hmac.new`)."""
        signer = Signer(key_cache_size=cache_size)
        req = CanonicalInput("GET", "/bucket/key", (("a", "1"),), (("host", "example.com"),), EMPTY_SHA256)
        start = datetime(2025, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
        cases = itertools.product([start, start + timedelta(microseconds=1), start + timedelta(days=40)],
                                  ["us-east-1", "ap-southeast-2"], ["s3", "execute-api"], [SECRET, "x" * 200])
        for now, region, service, secret in [*cases]:
            sig = signer.sign_headers(req, Credentials("AKID", secret), region=region, service=service, now=now)
            key = derived(secret, stamp(now)[:8], region, service)
            assert sig.signature == hmac.new(key, sig.string_to_sign.encode(), hashlib.sha256).hexdigest()
            assert sig.amz_date == stamp(now)
