"""Token detectors: secrets recognised by their shape, with no value registered for them."""
from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Detector:
    """A rule the masker applies where one of ``triggers`` occurs: ``regex`` matches only where
    a trigger begins, and its ``secret`` group (or the whole match) is masked.  A match never
    spans a line."""

    name: str
    triggers: tuple[bytes, ...]
    regex: re.Pattern
    max_len: int = 1024  # longest match; a line holding a trigger is held back at most this long

    def spans(self, buf, starts: list[int]) -> list[tuple[int, int]]:
        """The secret parts of the matches at ``starts`` (where triggers begin)."""
        # one anchored match per trigger: a trigger is rare enough (`://` on a URL line is the
        # commonest) that this costs less than one regex pass over the whole buffer
        group = "secret" if "secret" in self.regex.groupindex else 0
        match, size, longest = self.regex.match, len(buf), self.max_len
        out = []
        for i in starts:
            m = match(buf, i, min(size, i + longest))
            if m:
                out.append(m.span(group))
        return out


# URL query parameters whose value is a credential (GitLab masks these in job logs too)
_URL_PARAMS = ("password", "passwd", "token", "access_token", "private_token", "auth_token",
               "refresh_token", "api_key", "apikey", "client_secret", "secret", "sig",
               "X-Amz-Signature", "X-Amz-Security-Token", "X-Amz-Credential", "X-Goog-Signature")
_GITLAB = ("glpat-", "gldt-", "glrt-", "glptt-", "glft-", "glimt-", "glagent-", "gloas-",
           "glcbt-", "glsoat-", "GR1348941")
_AWS_NAMES = (b"aws_secret_access_key", b"AWS_SECRET_ACCESS_KEY", b"SecretAccessKey",
              b"secretAccessKey")

DETECTORS: tuple[Detector, ...] = (
    Detector("gitlab", tuple(p.encode() for p in _GITLAB),
             re.compile(b"(?:" + b"|".join(map(re.escape, (p.encode() for p in _GITLAB)))
                        + rb")[0-9A-Za-z_\-]{20,255}")),
    Detector("github", (b"ghp_", b"gho_", b"ghs_", b"ghu_", b"ghr_", b"github_pat_"),
             re.compile(rb"gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,244}")),
    Detector("slack", tuple(b"xox%c-" % c for c in b"baprs"),
             re.compile(rb"xox[baprs]-[0-9A-Za-z\-]{10,250}")),
    Detector("aws", (b"AKIA", b"ASIA"), re.compile(rb"A[KS]IA[0-9A-Z]{16}(?![0-9A-Za-z])")),
    # a secret access key has no shape of its own: it is recognised by the name before it
    Detector("aws", _AWS_NAMES,
             re.compile(b"(?:" + b"|".join(_AWS_NAMES) + rb")[\"']?[ \t]*[:=][ \t]*"
                        rb"[\"']?(?P<secret>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])")),
    Detector("jwt", (b"eyJ",), re.compile(
        rb"eyJ[A-Za-z0-9_\-]{2,8190}\.eyJ[A-Za-z0-9_\-]{2,8190}\.[A-Za-z0-9_\-]{0,8190}"),
        max_len=16384),
    Detector("url_params",
             tuple(sep + p.encode() + b"=" for p in _URL_PARAMS for sep in (b"?", b"&")),
             re.compile(rb"[?&](?:" + b"|".join(re.escape(p.encode()) for p in _URL_PARAMS)
                        + rb")=(?P<secret>[^&\s#\"'<>]{1,4000})"), max_len=4096),
    Detector("url_userinfo", (b"://",),
             re.compile(rb"://[^\s/@:?#]{0,500}:(?P<secret>[^\s/@?#]{1,500})@"), max_len=1024),
)
NAMES = tuple(dict.fromkeys(d.name for d in DETECTORS))


def enabled(switches: dict[str, bool] | None = None) -> tuple[Detector, ...]:
    """The detectors left on by ``switches`` (name → on/off); all are on by default."""
    switches = switches or {}
    return tuple(d for d in DETECTORS if switches.get(d.name, True))
