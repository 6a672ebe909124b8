"""tldextract without the network: the public suffix list snapshot bundled with the package.

tldextract fetches the public suffix list on first use unless told not to;
on a machine without internet that call fails or, behind a silent firewall,
waits for its timeout. Every extractor Sealroom uses, and the one Presidio's
email recognizer calls, reads the bundled snapshot instead and writes no
cache file.
"""

from __future__ import annotations

from functools import lru_cache
from types import SimpleNamespace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tldextract import TLDExtract


@lru_cache(maxsize=1)
def offline_extractor() -> TLDExtract:
    """Return a tldextract extractor that reads only the bundled suffix-list snapshot."""
    import tldextract  # loaded with the engine only

    extractor = tldextract.TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)
    extractor("example.com")  # parse the snapshot now, not inside the first record
    return extractor


def has_public_suffix(host: str) -> bool:
    """Say whether a host name ends in a known public suffix and has a name before it."""
    result = offline_extractor()(host)
    return bool(result.suffix and result.domain)


def patch_presidio_tldextract() -> None:
    """Point Presidio's stock email recognizer at the offline extractor."""
    from presidio_analyzer.predefined_recognizers.generic import email_recognizer

    email_recognizer.tldextract = SimpleNamespace(extract=offline_extractor())  # type: ignore[assignment]
