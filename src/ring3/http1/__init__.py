"""Sans-IO HTTP/1.1: parsing (httptools) and serialising."""

from ring3.http1.parser import H1Limits, H1Parser
from ring3.http1.serialize import serialize_head

__all__ = ["H1Limits", "H1Parser", "serialize_head"]
