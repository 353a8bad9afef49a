"""GPT-2's byte-level alphabet, shared by the tests that write their own tokenizer.json."""


def byte_chars():
    """GPT-2's bytes_to_unicode: printable bytes stand for themselves, the rest get 256, 257, ..."""
    printable = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars
