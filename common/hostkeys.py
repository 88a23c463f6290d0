"""SSH host keys as stored for pinning ("type base64") and their OpenSSH SHA256 fingerprints."""
from __future__ import annotations

import base64
import hashlib


def fingerprint(key_line: str) -> str:
    """OpenSSH-style SHA256 fingerprint of a "type base64" key, as humans compare them."""
    try:
        blob = base64.b64decode(key_line.split()[1])
    except (IndexError, ValueError):
        return "<unparseable key>"
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
