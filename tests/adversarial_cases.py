"""Cases shared by the in-process and the on-the-wire adversarial suites."""

from __future__ import annotations

#: (form, byte, request target): every byte 0x00-0xFF inside a path segment, raw and percent-encoded
#: in upper and lower case (the lower-case form only where it differs).
BYTE_CASES = [
    (form, byte, target)
    for byte in range(256)
    for form, target in (
        ("raw", b"/v1/a" + bytes([byte]) + b"b"),
        ("upper", b"/v1/a%%%02Xb" % byte),
        ("lower", b"/v1/a%%%02xb" % byte),
    )
    if not (form == "lower" and b"%02X" % byte == b"%02x" % byte)
]
BYTE_CASE_IDS = [f"{form}-{byte:02X}" for form, byte, _ in BYTE_CASES]
