"""Hypothesis strategies shared by the tests that fuzz the API socket's protocol."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

#: Any value MessagePack can carry: what a hostile client may put in any field.
msgpack_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
