"""Asking the Hugging Face Hub without hanging: offline mode, and a quick check that the Hub answers at all.

huggingface_hub retries a request that cannot connect five times with back-off (about 25 s) before it
gives up, so where the cache may already hold what we need, the cache is read first, and the network is
tried only when a short probe of the endpoint gets an answer.
"""

from __future__ import annotations

import time

PROBE_TIMEOUT_S = 5.0
REMEMBER_S = 60.0
_answers: dict[str, tuple[float, str | None]] = {}


def offline_mode(offline: bool) -> bool:
    """True when the caller asked for offline mode or HF_HUB_OFFLINE is set."""
    from huggingface_hub import constants

    return bool(offline or constants.HF_HUB_OFFLINE)


def hub_unreachable() -> str | None:
    """None when the Hub's endpoint answers (any HTTP status) within PROBE_TIMEOUT_S, else why not (one line).
    An answer is remembered for a minute, so that one load probes once."""
    from huggingface_hub import constants

    endpoint, now = constants.ENDPOINT, time.monotonic()
    seen = _answers.get(endpoint)
    if seen is None or now - seen[0] > REMEMBER_S:
        seen = _answers[endpoint] = (now, _probe(endpoint, PROBE_TIMEOUT_S))
    return seen[1]


def _probe(endpoint: str, timeout: float) -> str | None:
    import socket
    import urllib.error
    import urllib.request

    try:  # urllib honours the same HTTP(S)_PROXY variables as huggingface_hub
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return None  # it answered
    except urllib.error.URLError as e:
        return f"the Hub ({endpoint}) cannot be reached ({getattr(e.reason, 'strerror', None) or e.reason})"
    except (OSError, socket.timeout, ValueError) as e:
        return f"the Hub ({endpoint}) cannot be reached ({e or type(e).__name__})"
    return None
