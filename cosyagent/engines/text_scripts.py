"""The writing systems text is tested for, defined once for the engines and the reply pipeline."""

from __future__ import annotations

import re

HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")  # a Chinese character (CJK ideographs)
KANA = re.compile(r"[\u3040-\u30ff]")  # Japanese hiragana or katakana
